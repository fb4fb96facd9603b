//! socks4d: thin binary over the socks4-server library.
fn main() {}
