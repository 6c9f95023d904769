"""Projects: the user's own features, fields and models, in a folder of their repository
(layout in :mod:`eddy.services.project.layout`), found, loaded, checked and planned."""
