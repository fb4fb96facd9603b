//! Remote DNS for resolvers that live inside the program (Go's pure resolver, static glibc and
//! musl): their queries to port 53 go to a small responder in the supervisor, which answers A
//! queries with the shim's placeholders (`ops::dns::lookup`: the same decision, the same pool) and
//! other types of proxied names with an empty answer, so no query for them leaves the client.
//! Names the shim resolves locally (localhost, this host, `direct_names`) are forwarded to the
//! nameserver the program asked.
//!
//! The program's socket itself is pointed at the responder: a UDP or TCP connect to port 53 is
//! made to the responder instead, and a datagram sent with an address goes there too. Resolvers
//! that check where a reply came from (glibc's `recvfrom` against its nameserver list, musl's
//! likewise) are answered by the supervisor: recvfrom on such a socket reports the nameserver.
//! Go reads its connected socket with read(2) and needs nothing more. Ordinary connections are
//! never touched: only recvfrom calls that ask for the source address are seen at all.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::notify::{Answer, Call};
use super::state::Sock;
use super::{Supervisor, program};
use crate::config::Config;
use crate::log::{debug, error};
use crate::ops::{self, Verdict};
use crate::sockaddr::{in_family, ipv4_of};
use crate::sys;

pub struct Responder {
    udp: SocketAddrV4,
    tcp: SocketAddrV4,
    /// The program's socket (its local address) -> the nameserver it meant.
    clients: Mutex<HashMap<SocketAddr, SocketAddr>>,
    /// Whether any socket was redirected yet (recvfrom is answered by the kernel until then).
    used: AtomicBool,
}

impl Responder {
    /// The responder on loopback, when remote DNS is on; None when it is off (resolvers then talk
    /// to their nameservers as usual) or cannot be set up (said on stderr).
    pub fn start(config: &'static Config) -> Option<&'static Responder> {
        if !config.uses_placeholders() {
            return None;
        }
        let (udp, tcp) = match (UdpSocket::bind("127.0.0.1:0"), TcpListener::bind("127.0.0.1:0")) {
            (Ok(u), Ok(t)) => (u, t),
            (Err(e), _) | (_, Err(e)) => {
                error!("supervisor: cannot start the DNS responder ({e}); names are resolved locally");
                return None;
            }
        };
        let v4 = |a: std::io::Result<SocketAddr>| a.ok().and_then(|a| ipv4_of(&a));
        let responder: &'static Responder = Box::leak(Box::new(Responder {
            udp: v4(udp.local_addr())?,
            tcp: v4(tcp.local_addr())?,
            clients: Mutex::new(HashMap::new()),
            used: AtomicBool::new(false),
        }));
        std::thread::spawn(move || responder.serve_udp(udp));
        std::thread::spawn(move || {
            for stream in tcp.incoming().flatten() {
                std::thread::spawn(move || responder.serve_tcp(stream));
            }
        });
        Some(responder)
    }

    fn nameserver_of(&self, client: SocketAddr) -> Option<SocketAddr> {
        let client = ipv4_of(&client).map_or(client, SocketAddr::V4);
        self.clients.lock().unwrap_or_else(|e| e.into_inner()).get(&client).copied()
    }

    fn remember(&self, client: SocketAddr, nameserver: SocketAddr) {
        let client = ipv4_of(&client).map_or(client, SocketAddr::V4);
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        // Bounded: an old entry only matters for forwarding local names.
        if clients.len() > 4096 {
            clients.clear();
        }
        clients.insert(client, nameserver);
        self.used.store(true, Ordering::Release);
    }

    fn serve_udp(&self, socket: UdpSocket) {
        let mut buf = [0u8; 4096];
        loop {
            let Ok((n, from)) = socket.recv_from(&mut buf) else { continue };
            if let Some(reply) = answer(&buf[..n], self.nameserver_of(from), false) {
                let _ = socket.send_to(&reply, from);
            }
        }
    }

    fn serve_tcp(&self, mut stream: TcpStream) {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
        let nameserver = stream.peer_addr().ok().and_then(|p| self.nameserver_of(p));
        loop {
            let mut len = [0u8; 2];
            if stream.read_exact(&mut len).is_err() {
                return;
            }
            let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
            if stream.read_exact(&mut query).is_err() {
                return;
            }
            let Some(reply) = answer(&query, nameserver, true) else { return };
            let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&reply);
            if stream.write_all(&framed).is_err() {
                return;
            }
        }
    }
}

const TYPE_A: u16 = 1;
const CLASS_IN: u16 = 1;
const RCODE_SERVFAIL: u8 = 2;

/// The question of a query: its name, type, and where the question section ends.
fn question(query: &[u8]) -> Option<(String, u16, u16, usize)> {
    if query.len() < 12 || query[2] & 0x80 != 0 || u16::from_be_bytes([query[4], query[5]]) != 1 {
        return None;
    }
    let mut labels = Vec::new();
    let mut i = 12;
    loop {
        let len = usize::from(*query.get(i)?);
        if len == 0 {
            i += 1;
            break;
        }
        // Compression cannot appear in a query's first name; anything else is not a query.
        if len > 63 {
            return None;
        }
        labels.push(std::str::from_utf8(query.get(i + 1..i + 1 + len)?).ok()?.to_owned());
        i += 1 + len;
    }
    let qtype = u16::from_be_bytes([*query.get(i)?, *query.get(i + 1)?]);
    let qclass = u16::from_be_bytes([*query.get(i + 2)?, *query.get(i + 3)?]);
    Some((labels.join("."), qtype, qclass, i + 4))
}

/// The reply to `query`: a placeholder for A, an empty answer for other types of proxied names,
/// the nameserver's own reply for local names, SERVFAIL when neither can be had. None: not a
/// query (dropped, as a server would).
fn answer(query: &[u8], nameserver: Option<SocketAddr>, tcp: bool) -> Option<Vec<u8>> {
    let (name, qtype, qclass, end) = question(query)?;
    let reply = |rcode: u8, answer: Option<Ipv4Addr>| {
        let mut r = Vec::with_capacity(end + 16);
        r.extend_from_slice(&query[..2]);
        // QR, the query's opcode and RD, RA.
        r.push(0x80 | (query[2] & 0x79));
        r.push(0x80 | rcode);
        r.extend_from_slice(&[0, 1, 0, u8::from(answer.is_some()), 0, 0, 0, 0]);
        r.extend_from_slice(&query[12..end]);
        if let Some(ip) = answer {
            // The name by pointer to the question, A, IN, TTL 60 s, 4 bytes.
            r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
            r.extend_from_slice(&ip.octets());
        }
        r
    };
    match ops::dns::lookup(name.as_bytes()) {
        Verdict::Done(ip) => {
            debug!("supervisor DNS: {name} type {qtype}: placeholder {ip}");
            Some(reply(0, (qtype == TYPE_A && qclass == CLASS_IN).then_some(ip)))
        }
        Verdict::Pass => match nameserver.and_then(|ns| forward(query, ns, tcp)) {
            Some(r) => Some(r),
            None => Some(reply(RCODE_SERVFAIL, None)),
        },
        Verdict::Fail(_) => Some(reply(RCODE_SERVFAIL, None)),
    }
}

/// Asks the program's own nameserver (a name that is resolved locally).
fn forward(query: &[u8], nameserver: SocketAddr, tcp: bool) -> Option<Vec<u8>> {
    let timeout = Duration::from_secs(5);
    if tcp {
        let mut s = TcpStream::connect_timeout(&nameserver, timeout).ok()?;
        s.set_read_timeout(Some(timeout)).ok()?;
        let mut framed = (query.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(query);
        s.write_all(&framed).ok()?;
        let mut len = [0u8; 2];
        s.read_exact(&mut len).ok()?;
        let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut reply).ok()?;
        return Some(reply);
    }
    let bind = if nameserver.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let s = UdpSocket::bind(bind).ok()?;
    s.connect(nameserver).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    s.send(query).ok()?;
    let mut buf = vec![0u8; 65536];
    let n = s.recv(&mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

/// Whether a connect to `dest` is one of a resolver's (port 53, remote DNS on).
pub fn is_nameserver_port(sup: &Supervisor, dest: &SocketAddr) -> bool {
    sup.dns.is_some() && dest.port() == 53
}

fn socket_type(fd: &OwnedFd) -> Option<i32> {
    let mut v: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: v and len are valid for writes and len is v's size.
    let r = unsafe { libc::getsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_TYPE, (&raw mut v).cast(), &mut len) };
    (r == 0).then_some(v)
}

/// Connects a resolver's socket to the responder instead of `nameserver`; None: not a UDP or TCP
/// socket after all.
pub fn redirect(sup: &Supervisor, call: &Call, fd: &OwnedFd, nameserver: SocketAddr) -> Option<Answer> {
    let responder = sup.dns?;
    let target = match socket_type(fd)? {
        libc::SOCK_DGRAM => responder.udp,
        libc::SOCK_STREAM => responder.tcp,
        _ => return None,
    };
    let ino = program::inode(fd).ok()?;
    let raw = fd.as_raw_fd();
    let result = match sys::connect(raw, &in_family(target, nameserver.is_ipv6())) {
        Ok(()) => Ok(()),
        // A non-blocking TCP socket: loopback connects within a moment.
        Err(libc::EINPROGRESS) => match sys::poll(raw, libc::POLLOUT, 2000) {
            Ok(n) if n != 0 => match sys::socket_error(raw) {
                0 => Ok(()),
                e => Err(e),
            },
            _ => Err(libc::ETIMEDOUT),
        },
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        error!(
            "DNS query to {nameserver}: cannot reach the supervisor's responder: {}",
            std::io::Error::from_raw_os_error(e)
        );
        return Some(Answer::Fail(e));
    }
    if let Ok(local) = sys::local_addr(raw) {
        responder.remember(local, nameserver);
    }
    sup.state.lock().socks.insert(ino, Sock::Dns { nameserver });
    debug!("supervisor: DNS socket of thread {} to {nameserver} now talks to the responder", call.tid);
    Some(Answer::Value(0))
}

/// sendto(2) with an address: a query to port 53 on an unconnected socket (musl) goes to the
/// responder; anything else is the kernel's.
pub fn sendto(sup: &'static Supervisor, call: Call) -> Option<Answer> {
    let Some(responder) = sup.dns else { return Some(Answer::Continue) };
    let nameserver = match program::read_sockaddr(call.tid, call.args[4], call.args[5]) {
        Ok(Some(dest)) if dest.port() == 53 => dest,
        _ => return Some(Answer::Continue),
    };
    let Ok(fd) = sup.take_fd(&call) else { return Some(Answer::Continue) };
    if socket_type(&fd) != Some(libc::SOCK_DGRAM) {
        return Some(Answer::Continue);
    }
    let Ok(ino) = program::inode(&fd) else { return Some(Answer::Continue) };
    let Ok(data) = program::read(call.tid, call.args[1], (call.args[2] as usize).min(65536)) else {
        return Some(Answer::Fail(libc::EFAULT));
    };
    let to = crate::sockaddr::RawAddr::from(&in_family(responder.udp, nameserver.is_ipv6()));
    let flags = call.int(3) | libc::MSG_DONTWAIT;
    // SAFETY: data is valid for its length; `to` is a sockaddr of its size.
    let n = unsafe { libc::sendto(fd.as_raw_fd(), data.as_ptr().cast(), data.len(), flags, to.as_ptr(), to.size()) };
    if n < 0 {
        return Some(Answer::Fail(sys::errno()));
    }
    if let Ok(local) = sys::local_addr(fd.as_raw_fd()) {
        responder.remember(local, nameserver);
    }
    sup.state.lock().socks.insert(ino, Sock::Dns { nameserver });
    Some(Answer::Value(n as i64))
}

/// recvfrom(2) asking for the source: on a redirected resolver socket the reply is the
/// responder's, reported as coming from the nameserver the resolver asked.
pub fn recvfrom(sup: &'static Supervisor, call: Call) -> Option<Answer> {
    match sup.dns {
        Some(r) if r.used.load(Ordering::Acquire) => {}
        _ => return Some(Answer::Continue),
    }
    let Ok(fd) = sup.take_fd(&call) else { return Some(Answer::Continue) };
    let Ok(ino) = program::inode(&fd) else { return Some(Answer::Continue) };
    let Some(Sock::Dns { nameserver }) = sup.state.lock().socks.get(&ino).cloned() else {
        return Some(Answer::Continue);
    };
    let nonblocking = call.int(3) & libc::MSG_DONTWAIT != 0
        || sys::get_flags(fd.as_raw_fd()).is_ok_and(|f| f & libc::O_NONBLOCK != 0);
    match receive(sup, &call, &fd, nameserver) {
        Err(libc::EAGAIN) if !nonblocking => {
            sup.pool.run(move || {
                loop {
                    let _ = sys::poll(fd.as_raw_fd(), libc::POLLIN, 200);
                    if !sup.listener.is_valid(call.id) {
                        return;
                    }
                    match receive(sup, &call, &fd, nameserver) {
                        Err(libc::EAGAIN) => {}
                        r => return sup.listener.answer(call.id, r.unwrap_or_else(Answer::Fail)),
                    }
                }
            });
            None
        }
        r => Some(r.unwrap_or_else(Answer::Fail)),
    }
}

fn receive(sup: &Supervisor, call: &Call, fd: &OwnedFd, nameserver: SocketAddr) -> Result<Answer, i32> {
    let mut buf = vec![0u8; (call.args[2] as usize).min(65536)];
    let flags = call.int(3) | libc::MSG_DONTWAIT;
    // SAFETY: buf is valid for writes of its length; no source address is asked for.
    let n = unsafe {
        libc::recvfrom(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            flags,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
    if n < 0 {
        return Err(sys::errno());
    }
    if !sup.listener.is_valid(call.id) {
        return Err(libc::EINTR);
    }
    let copied = (n as usize).min(buf.len());
    program::write(call.tid, call.args[1], &buf[..copied]).map_err(|_| libc::EFAULT)?;
    program::write_sockaddr(call.tid, &nameserver, call.args[4], call.args[5]).map_err(|_| libc::EFAULT)?;
    Ok(Answer::Value(n as i64))
}
