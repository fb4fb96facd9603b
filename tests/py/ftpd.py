#!/usr/bin/python3
"""pyftpdlib FTP server for the socks4 end-to-end tests.

Usage: ftpd.py ROOT BIND_IP LOGFILE

Serves ROOT read-only to anonymous and read-write to user "tester" (password
"secret") on BIND_IP, port chosen by the kernel, printed on stdout as
"port N". Foreign PORT/EPRT addresses stay refused (pyftpdlib's default), so a
PORT that does not name the control connection's peer fails, as it would
against a careful real server.

Every control connection, PORT/EPRT/PASV/EPSV command and data connection is
logged as one "EVENT ..." line to LOGFILE, so the tests can assert where the
bytes went and not merely that a client exited 0.
"""

import logging
import sys

from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import DTPHandler, FTPHandler
from pyftpdlib.servers import FTPServer


def fmt(addr):
    host, port = addr[0], addr[1]
    return "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)


class LoggingDTPHandler(DTPHandler):
    def __init__(self, sock, cmd_channel):
        # active: the server connected out to the PORT address;
        # passive: the client connected in.
        mode = "passive" if cmd_channel._dtp_acceptor is not None else "active"
        try:
            peer = fmt(sock.getpeername())
            local = fmt(sock.getsockname())
        except OSError as e:
            peer = local = "error:%s" % e
        logging.info("EVENT data mode=%s peer=%s local=%s control_peer=%s:%s",
                     mode, peer, local, cmd_channel.remote_ip, cmd_channel.remote_port)
        super().__init__(sock, cmd_channel)


class LoggingHandler(FTPHandler):
    dtp_handler = LoggingDTPHandler
    permit_foreign_addresses = False

    def on_connect(self):
        logging.info("EVENT control peer=%s:%s local=%s", self.remote_ip, self.remote_port,
                     fmt(self.socket.getsockname()))

    def ftp_PORT(self, line):
        logging.info("EVENT cmd PORT %s", line)
        return super().ftp_PORT(line)

    def ftp_EPRT(self, line):
        logging.info("EVENT cmd EPRT %s", line)
        return super().ftp_EPRT(line)

    def ftp_PASV(self, line):
        logging.info("EVENT cmd PASV")
        return super().ftp_PASV(line)

    def ftp_EPSV(self, line):
        logging.info("EVENT cmd EPSV %s", line)
        return super().ftp_EPSV(line)

    def log_transfer(self, cmd, filename, receive, completed, elapsed, bytes):
        logging.info("EVENT transfer cmd=%s file=%s completed=%d bytes=%d", cmd, filename,
                     1 if completed else 0, bytes)
        return super().log_transfer(cmd, filename, receive, completed, elapsed, bytes)


def main():
    root, bind_ip, logfile = sys.argv[1:4]
    logging.basicConfig(filename=logfile, level=logging.DEBUG,
                        format="%(asctime)s %(levelname)s %(message)s")
    authorizer = DummyAuthorizer()
    authorizer.add_anonymous(root)
    authorizer.add_user("tester", "secret", root, perm="elradfmwMT")
    handler = LoggingHandler
    handler.authorizer = authorizer
    handler.banner = "socks4-tests pyftpdlib ready"
    server = FTPServer((bind_ip, 0), handler)
    print("port %d" % server.socket.getsockname()[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
