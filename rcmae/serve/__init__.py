"""`rcmae serve`: the Python API behind HTTP, on Ray Serve (`app`), what an upload may be (`uploads`) and the
web page's log-mel picture (`view`)."""
