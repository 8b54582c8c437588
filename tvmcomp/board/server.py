"""TVM RPC server that keeps serving after a failed session. Runs on the board's own Python.

TVM 0.27's stock server (``python -m tvm.exec.rpc_server``) lets the RuntimeError of a session
whose process exited abnormally escape its accept loop: the server then stops accepting while its
process lives on. Here the accept loop is re-entered after such a session, from a working
directory that exists (the failed session's temporary one is gone, and the next session's
``os.getcwd()`` would fail). Sessions still run in
a forked child each, as in the stock server; this file imports nothing from tvmcomp, which the
board does not have.
"""

import argparse
import logging
import os
import socket

from tvm.rpc import server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tracker", help="HOST:PORT of an RPC tracker to register with")
    parser.add_argument("--key", default="", help="device key announced to the tracker")
    parser.add_argument("--load-library", help="colon-separated libraries each session loads")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    tracker = None
    if args.tracker:
        host, port = args.tracker.rsplit(":", 1)
        tracker = (host, int(port))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(1)
    logging.info("serving on %s:%d%s", args.host, args.port, f" (tracker {args.tracker}, key {args.key})" if tracker else "")
    home = os.getcwd()
    while True:
        try:
            server._listen_loop(sock, args.port, args.key, tracker, args.load_library, args.host)
        except RuntimeError as err:  # a session died; its client got an error, the board goes on
            logging.warning("session failed: %s; still serving", err)
            os.chdir(home)


if __name__ == "__main__":
    main()
