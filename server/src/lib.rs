//! socks4-server: the SOCKS4/4A server library behind `socks4d`.
