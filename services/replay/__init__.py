"""`marionette record` and `marionette replay`: topics to a file and back.

recording.py is the file format; recorder.py reads live streams into it; replayer.py puts
a recording back (exactly, or only its inputs for today's stages); turns.py and diff.py
compare a replay with its recording, turn by turn; command.py is the two commands.
"""
