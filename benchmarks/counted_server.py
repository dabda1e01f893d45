"""`streamlit run streamlit_app.py ARGS`, which on SIGUSR1 writes how many of the app's per-visitor
objects are alive (after a full collection) as a JSON line to the file $COUNTED_OBJECTS_FILE:
whether a visitor who left is let go (benchmarks/load.py --generations).

Run: COUNTED_OBJECTS_FILE=/tmp/counts python -m benchmarks.counted_server [streamlit run options]
"""

from __future__ import annotations

import collections
import gc
import json
import os
import signal
import sys
from types import FrameType

from streamlit.web import cli

#: The classes counted: a visitor's service and what it holds, and Streamlit's session.
COUNTED = ("VisitorService", "Workspace", "ChatSession", "Conversation", "Message", "AppSession")


def write_counts(_signal: int, _frame: FrameType | None) -> None:
    gc.collect()
    alive = collections.Counter(type(thing).__name__ for thing in gc.get_objects())
    with open(os.environ["COUNTED_OBJECTS_FILE"], "a", encoding="utf-8") as out:
        out.write(json.dumps({name: alive[name] for name in COUNTED}) + "\n")


if __name__ == "__main__":
    signal.signal(signal.SIGUSR1, write_counts)
    sys.argv = ["streamlit", "run", "streamlit_app.py", *sys.argv[1:]]
    sys.exit(cli.main())
