"""`marionette chaos`: a conversation under random kills and Redis restarts, and its verdict."""
