//! libsocks4.so: the LD_PRELOAD shim.
