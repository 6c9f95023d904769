"""Dead letters: what a rejected record carries, and the policy that decides dead-letter, retry or
stop."""
