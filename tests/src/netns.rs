//! Network namespaces made by the tests: a firewall topology client | proxy | server.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicU32 = AtomicU32::new(0);
static SWEEP: Once = Once::new();

/// A network namespace named `s4t-<tag>-<pid>-<n>`, with `lo` up; `Drop` deletes it.
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates the namespace (needs root).
    ///
    /// # Panics
    /// When `ip netns add` fails.
    pub fn new(tag: &str) -> Netns {
        SWEEP.call_once(sweep_stale);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("s4t-{tag}-{}-{n}", std::process::id());
        ip(&["netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip netns exec <ns> program`: add arguments and environment to it as usual.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// `cmd` (program, arguments, environment changes) run inside the namespace, as
    /// `ip netns exec <ns> /usr/bin/env [-u K] [K=V]... program args...`: the environment is
    /// applied by `env` after entering, so an LD_PRELOAD in it never loads into `ip` itself.
    pub fn wrap(&self, cmd: &Command) -> Command {
        let mut out = Command::new("ip");
        out.args(["netns", "exec", &self.name, "/usr/bin/env"]);
        // env takes its -u options before the assignments.
        for (key, value) in cmd.get_envs() {
            if value.is_none() {
                out.arg("-u").arg(key);
            }
        }
        for (key, value) in cmd.get_envs() {
            if let Some(v) = value {
                let mut kv = key.to_os_string();
                kv.push("=");
                kv.push(v);
                out.arg(kv);
            }
        }
        out.arg(cmd.get_program()).args(cmd.get_args());
        out
    }

    /// `ip -n <ns> args...`.
    ///
    /// # Panics
    /// When the command fails.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        ip(&all);
    }

    /// A veth pair between `self` (interface `ifname`, addresses `cidrs`) and `peer`
    /// (`peer_ifname`, `peer_cidrs`), both up. IPv6 addresses are added without duplicate address
    /// detection, so they are usable at once.
    ///
    /// # Panics
    /// When an `ip` command fails.
    pub fn link(&self, ifname: &str, cidrs: &[&str], peer: &Netns, peer_ifname: &str, peer_cidrs: &[&str]) {
        self.ip(&["link", "add", ifname, "type", "veth", "peer", "name", peer_ifname, "netns", peer.name()]);
        for (ns, dev, list) in [(self, ifname, cidrs), (peer, peer_ifname, peer_cidrs)] {
            for cidr in list {
                if cidr.contains(':') {
                    ns.ip(&["addr", "add", cidr, "dev", dev, "nodad"]);
                } else {
                    ns.ip(&["addr", "add", cidr, "dev", dev]);
                }
            }
            ns.ip(&["link", "set", dev, "up"]);
        }
    }

    /// Sets a sysctl inside the namespace, e.g. `("net.ipv4.ip_forward", "0")`.
    ///
    /// # Panics
    /// When it cannot be set.
    pub fn sysctl(&self, key: &str, value: &str) {
        let out = self.command("sysctl").args(["-q", "-w", &format!("{key}={value}")]).output().expect("sysctl");
        assert!(
            out.status.success(),
            "sysctl {key}={value} in {}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Polls until something in namespace `ns` accepts TCP on `addr`.
    pub fn wait_for_tcp_in(ns: &str, addr: SocketAddr, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let script = format!("exec 3<>/dev/tcp/{}/{}", addr.ip(), addr.port());
        while Instant::now() < deadline {
            let ok = Command::new("ip")
                .args(["netns", "exec", ns, "timeout", "1", "bash", "-c", &script])
                .env_remove("LD_PRELOAD")
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// Deletes namespaces left by test processes that died without running their destructors
/// (SIGKILL, abort): `s4t-<tag>-<pid>-<n>` whose pid no longer exists.
fn sweep_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else { return };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let mut parts = name.split('-');
        let (Some("s4t"), Some(_tag), Some(pid)) = (parts.next(), parts.next(), parts.next()) else { continue };
        if pid.parse::<u32>().is_ok() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).env_remove("LD_PRELOAD").output().expect("run ip");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// Three namespaces: `client` -- `proxy` -- `server`, two veth links, and no forwarding in
/// `proxy`: the client has no route to the server's network, so only a proxy running in
/// `proxy` can carry its traffic.
///
/// Addresses (10.77.0.0/16 exists only inside these namespaces):
/// client 10.77.1.2/24 <-> proxy 10.77.1.1/24; proxy 10.77.2.1/24 <-> server 10.77.2.2/24.
pub struct Topology {
    pub client: Netns,
    pub proxy: Netns,
    pub server: Netns,
    pub client_ip: IpAddr,
    /// The proxy's address on the client side (where SOCKS clients connect).
    pub proxy_inside_ip: IpAddr,
    /// The proxy's address on the server side (source of its connections, BIND address).
    pub proxy_outside_ip: IpAddr,
    pub server_ip: IpAddr,
}

impl Topology {
    /// Builds the topology (needs root).
    ///
    /// # Panics
    /// When any `ip` command fails; whatever was built is deleted.
    pub fn firewall() -> Topology {
        let client = Netns::new("cli");
        let proxy = Netns::new("fw");
        let server = Netns::new("srv");
        // Created inside the namespaces directly: the names never exist in the root namespace,
        // so parallel tests cannot collide.
        client.ip(&["link", "add", "c0", "type", "veth", "peer", "name", "p0", "netns", proxy.name()]);
        proxy.ip(&["link", "add", "p1", "type", "veth", "peer", "name", "s0", "netns", server.name()]);
        client.ip(&["addr", "add", "10.77.1.2/24", "dev", "c0"]);
        proxy.ip(&["addr", "add", "10.77.1.1/24", "dev", "p0"]);
        proxy.ip(&["addr", "add", "10.77.2.1/24", "dev", "p1"]);
        server.ip(&["addr", "add", "10.77.2.2/24", "dev", "s0"]);
        client.ip(&["link", "set", "c0", "up"]);
        proxy.ip(&["link", "set", "p0", "up"]);
        proxy.ip(&["link", "set", "p1", "up"]);
        server.ip(&["link", "set", "s0", "up"]);
        proxy.sysctl("net.ipv4.ip_forward", "0");
        Topology {
            client,
            proxy,
            server,
            client_ip: IpAddr::V4(Ipv4Addr::new(10, 77, 1, 2)),
            proxy_inside_ip: IpAddr::V4(Ipv4Addr::new(10, 77, 1, 1)),
            proxy_outside_ip: IpAddr::V4(Ipv4Addr::new(10, 77, 2, 1)),
            server_ip: IpAddr::V4(Ipv4Addr::new(10, 77, 2, 2)),
        }
    }
}

/// /etc/netns/<ns>/{hosts,resolv.conf} for one namespace (`ip netns exec` bind-mounts them over
/// /etc/hosts and /etc/resolv.conf); `Drop` removes the directory.
pub struct NetnsFiles {
    dir: std::path::PathBuf,
}

impl NetnsFiles {
    /// Writes the two files for `ns`.
    ///
    /// # Panics
    /// When they cannot be written.
    pub fn new(ns: &Netns, hosts: &str, resolv: &str) -> NetnsFiles {
        let dir = std::path::PathBuf::from("/etc/netns").join(ns.name());
        std::fs::create_dir_all(&dir).expect("mkdir /etc/netns/<ns>");
        let files = NetnsFiles { dir };
        std::fs::write(files.dir.join("hosts"), hosts).expect("write netns hosts");
        std::fs::write(files.dir.join("resolv.conf"), resolv).expect("write netns resolv.conf");
        files
    }
}

impl Drop for NetnsFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
