"""Several columns answering one message, votes and the leaderboard, test sets."""
