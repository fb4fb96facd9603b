"""One SOCKS request, for tests that need a chosen source address or raw first bytes.

usage: socks_probe.py SOURCE_IP PROXY_IP PROXY_PORT DEST_IP DEST_PORT [--socks 4|5] [--first HEX]
                      [--send TEXT]

Connects to the proxy from SOURCE_IP (port chosen by the kernel), sends the bytes of --first
(hex, e.g. a forged PROXY protocol header) if given, then a SOCKS4 CONNECT (user id "probe")
or a SOCKS5 no-auth CONNECT to DEST, and prints one line:
  reply CODE ADDR:PORT     the (last) reply's code and address (SOCKS5: after method 00)
  method FF                SOCKS5: the server refused every method
  closed                   the proxy closed (or reset) without a reply
Then, if the reply granted and --send is given, sends TEXT and prints `echo <received>`.
Every step is bounded by a 5 s timeout; the exit status is 0 whatever the answer.
"""
import ipaddress
import socket
import struct
import sys


def recv_exact(s, n):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def main():
    args = sys.argv[1:]
    source, proxy_ip, proxy_port, dest_ip, dest_port = args[:5]
    opts = dict(zip(args[5::2], args[6::2]))
    version = opts.get("--socks", "4")
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(5)
    s.bind((source, 0))
    s.connect((proxy_ip, int(proxy_port)))
    print(f"local {s.getsockname()[0]}:{s.getsockname()[1]}", flush=True)
    try:
        if "--first" in opts:
            s.sendall(bytes.fromhex(opts["--first"]))
        dest = ipaddress.IPv4Address(dest_ip).packed
        port = struct.pack(">H", int(dest_port))
        if version == "4":
            s.sendall(b"\x04\x01" + port + dest + b"probe\x00")
            reply = recv_exact(s, 8)
            if reply is None:
                print("closed")
                return
            code = reply[1]
            addr = f"{ipaddress.IPv4Address(reply[4:8])}:{struct.unpack('>H', reply[2:4])[0]}"
            granted = code == 90
        else:
            s.sendall(b"\x05\x01\x00")
            method = recv_exact(s, 2)
            if method is None:
                print("closed")
                return
            if method[1] != 0:
                print(f"method {method[1]:02X}")
                return
            s.sendall(b"\x05\x01\x00\x01" + dest + port)
            reply = recv_exact(s, 10)
            if reply is None:
                print("closed")
                return
            code = reply[1]
            addr = f"{ipaddress.IPv4Address(reply[4:8])}:{struct.unpack('>H', reply[8:10])[0]}"
            granted = code == 0
        print(f"reply {code} {addr}", flush=True)
        if granted and "--send" in opts:
            s.sendall(opts["--send"].encode())
            print(f"echo {s.recv(4096).decode(errors='replace')}")
    except (ConnectionResetError, BrokenPipeError):
        print("closed")


main()
