"""twitch: Twitch chat in (EventSub over its WebSocket, via twitchio 3), answers and
moderators' commands out. See docs/twitch.md."""
