//! The server: accept loops over the listeners, the session cap, live
//! config reload, graceful shutdown, and the daemon's signal handling.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use socks4_proto::v4::{Reply, ReplyCode};
use socks4_proto::v5;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::balancer::PerClient;
use crate::busy_poll;
use crate::config::Config;
use crate::metrics::{Metrics, Refusal, RuleHits};
use crate::metrics_http;
use crate::privileges::{self, Switch};
use crate::session;
use crate::systemd::{self, Systemd};
use crate::workers::Workers;

/// After an accept error such as EMFILE, wait this long before retrying:
/// the error would repeat at once and spin the loop.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Clients over `max_connections` being refused at the same time; beyond
/// this they are dropped without a reply.
const MAX_REFUSING: usize = 256;
/// How long a client over the cap may take to say which protocol it speaks;
/// one that says nothing gets SOCKS4's 91.
const FIRST_BYTE_WAIT: Duration = Duration::from_millis(200);

/// The configuration new sessions get, with its rules' counters.
pub(crate) struct Live {
    pub(crate) config: Arc<Config>,
    /// Empty when metrics are off.
    pub(crate) rule_hits: RuleHits,
}

/// State shared by the accept loops and the sessions.
struct Shared {
    live: RwLock<Arc<Live>>,
    /// Live sessions (not counting clients being refused for the cap).
    active: Arc<AtomicUsize>,
    /// The most sessions live at once since the heap trimmer last looked: a burst that comes
    /// and goes between two of its looks still counts (memory.rs).
    peak: AtomicUsize,
    refusing: AtomicUsize,
    /// `None`: `metrics` is off, nothing is counted.
    metrics: Option<Arc<Metrics>>,
    /// Live sessions per client address (`max_sessions_per_client`).
    per_client: Arc<PerClient>,
}

impl Shared {
    fn live(&self) -> Arc<Live> {
        self.live.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn config(&self) -> Arc<Config> {
        self.live().config.clone()
    }

    fn make_live(&self, config: Config) -> Arc<Live> {
        let rule_hits = self.metrics.as_ref().map(|m| m.rule_hits(&config.rules)).unwrap_or_default();
        Arc::new(Live { config: Arc::new(config), rule_hits })
    }
}

/// A running server. Dropping it closes the listeners and cuts live
/// sessions at once; [`Server::shutdown`] lets them drain first.
pub struct Server {
    local_addrs: Vec<SocketAddr>,
    shared: Arc<Shared>,
    /// Set to true: accept loops stop.
    stop: watch::Sender<bool>,
    /// Set to true: live sessions are cut.
    kill: watch::Sender<bool>,
    accept_tasks: Vec<JoinHandle<()>>,
    /// Where `/metrics` is served, if it is.
    metrics_addr: Option<SocketAddr>,
    /// The session threads of [`Server::bind_per_core`]; dropped last.
    workers: Option<Workers>,
}

impl Server {
    /// Binds every address in `config.listen` and starts serving.
    ///
    /// # Errors
    ///
    /// The first address that cannot be bound, named in the error.
    pub async fn bind(config: Config) -> io::Result<Server> {
        let mut listeners = Vec::new();
        for addr in &config.listen {
            let l =
                TcpListener::bind(addr).await.map_err(|e| io::Error::new(e.kind(), format!("listen {addr}: {e}")))?;
            listeners.push(l);
        }
        Server::from_listeners(listeners, config)
    }

    /// Opens the metrics listener, if `config.metrics` asks for one.
    fn metrics_listener(config: &Config) -> io::Result<Option<std::net::TcpListener>> {
        let Some(addr) = config.metrics else { return Ok(None) };
        let listener =
            std::net::TcpListener::bind(addr).map_err(|e| io::Error::new(e.kind(), format!("metrics {addr}: {e}")))?;
        listener.set_nonblocking(true)?;
        Ok(Some(listener))
    }

    /// Like [`Server::bind`], but sessions run on `threads` threads of
    /// their own (one per core is right), each with its own current-thread
    /// runtime and its own SO_REUSEPORT listener per address; see
    /// `workers.rs`. The calling runtime keeps only the control work.
    ///
    /// # Errors
    ///
    /// If the threads cannot start, or the first address that cannot be
    /// bound, named in the error.
    pub async fn bind_per_core(config: Config, threads: usize) -> io::Result<Server> {
        Server::open_per_core(&config, threads, Vec::new())?.serve(config)
    }

    /// The first half of [`Server::bind_per_core`]: starts the threads and
    /// opens the listeners, but accepts nothing yet, so that the daemon can
    /// give up root in between. Listens on `config.listen`, or, when
    /// `inherited` has sockets (socket activation), on those instead.
    ///
    /// # Errors
    ///
    /// If the threads cannot start, or the first address that cannot be
    /// bound, named in the error.
    pub fn open_per_core(config: &Config, threads: usize, inherited: Vec<std::net::TcpListener>) -> io::Result<Bound> {
        let workers = Workers::start(threads, config.busy_poll_us)?;
        let mut listeners = Vec::new();
        let mut local_addrs = Vec::new();
        if inherited.is_empty() {
            for addr in &config.listen {
                let group =
                    workers.listen(*addr).map_err(|e| io::Error::new(e.kind(), format!("listen {addr}: {e}")))?;
                local_addrs.push(group[0].local_addr()?);
                listeners.extend(workers.handles().iter().cloned().zip(group));
            }
        } else {
            for socket in inherited {
                local_addrs.push(socket.local_addr()?);
                listeners.extend(workers.handles().iter().cloned().zip(workers.adopt(socket)?));
            }
        }
        let metrics = Server::metrics_listener(config)?;
        Ok(Bound { listeners, local_addrs, workers, metrics })
    }

    /// Serves on listeners bound by the caller (`config.listen` is ignored).
    /// Must be called inside a tokio runtime.
    ///
    /// # Errors
    ///
    /// If a listener's local address cannot be read.
    pub fn from_listeners(listeners: Vec<TcpListener>, config: Config) -> io::Result<Server> {
        let local_addrs = listeners.iter().map(TcpListener::local_addr).collect::<io::Result<Vec<_>>>()?;
        let here = Handle::current();
        let listeners = listeners.into_iter().map(|l| (here.clone(), l)).collect();
        let metrics = Server::metrics_listener(&config)?;
        Server::start(listeners, local_addrs, config, None, metrics)
    }

    /// Starts an accept loop for each listener on the runtime it is
    /// registered with; sessions run where their listener's loop runs. The
    /// metrics endpoint, if any, runs on the calling runtime (the daemon's
    /// control thread, never a session thread).
    fn start(
        listeners: Vec<(Handle, TcpListener)>,
        local_addrs: Vec<SocketAddr>,
        config: Config,
        workers: Option<Workers>,
        metrics_listener: Option<std::net::TcpListener>,
    ) -> io::Result<Server> {
        let active = Arc::new(AtomicUsize::new(0));
        let metrics = metrics_listener.is_some().then(|| Arc::new(Metrics::new(active.clone())));
        let mut shared = Shared {
            live: RwLock::new(Arc::new(Live { config: Arc::new(Config::default()), rule_hits: RuleHits::default() })),
            active,
            peak: AtomicUsize::new(0),
            refusing: AtomicUsize::new(0),
            metrics,
            per_client: Arc::new(PerClient::default()),
        };
        shared.live = RwLock::new(shared.make_live(config));
        let shared = Arc::new(shared);
        let weak = Arc::downgrade(&shared);
        crate::memory::spawn_trimmer(move || {
            let s = weak.upgrade()?;
            let now = s.active.load(Ordering::Relaxed);
            Some((now, s.peak.swap(now, Ordering::Relaxed).max(now)))
        });
        let (stop, _) = watch::channel(false);
        let (kill, _) = watch::channel(false);
        let mut accept_tasks: Vec<JoinHandle<()>> = listeners
            .into_iter()
            .map(|(rt, l)| {
                rt.spawn(busy_poll::counted(accept_loop(l, shared.clone(), stop.subscribe(), kill.subscribe())))
            })
            .collect();
        let mut metrics_addr = None;
        if let (Some(listener), Some(metrics)) = (metrics_listener, &shared.metrics) {
            metrics_addr = Some(listener.local_addr()?);
            let listener = TcpListener::from_std(listener)?;
            accept_tasks.push(tokio::spawn(metrics_http::serve(listener, metrics.clone(), stop.subscribe())));
        }
        Ok(Server { local_addrs, shared, stop, kill, accept_tasks, metrics_addr, workers })
    }

    /// Where `/metrics` is served (port 0 resolved), if `metrics` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The server's counters, if `metrics` is set.
    pub fn metrics(&self) -> Option<&Arc<Metrics>> {
        self.shared.metrics.as_ref()
    }

    /// The addresses actually listened on (port 0 resolved).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// Replaces the configuration for sessions accepted from now on; live
    /// sessions keep the one they started with. Listeners stay as they are.
    pub fn reload(&self, config: Config) {
        if let Some(workers) = &self.workers {
            workers.set_busy_poll(config.busy_poll_us);
        }
        let live = self.shared.make_live(config);
        *self.shared.live.write().unwrap_or_else(|e| e.into_inner()) = live;
    }

    /// The configuration new sessions get.
    pub fn config(&self) -> Arc<Config> {
        self.shared.config()
    }

    /// Sessions running now.
    pub fn active_sessions(&self) -> usize {
        self.shared.active.load(Ordering::SeqCst)
    }

    /// Stops accepting (listeners close at once), lets live sessions run for
    /// up to the configured `drain_timeout`, then cuts the rest. Returns
    /// whether every session finished on its own.
    pub async fn shutdown(mut self) -> bool {
        let _ = self.stop.send(true);
        for task in std::mem::take(&mut self.accept_tasks) {
            let _ = task.await;
        }
        let deadline = tokio::time::Instant::now() + self.shared.config().drain_timeout;
        while self.active_sessions() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let drained = self.active_sessions() == 0;
        if !drained {
            tracing::warn!(sessions = self.active_sessions(), "drain time over: closing live sessions");
            let _ = self.kill.send(true);
        }
        drained
    }
}

/// Listeners open on the session threads, accepting nothing yet; see
/// [`Server::open_per_core`].
pub struct Bound {
    listeners: Vec<(Handle, TcpListener)>,
    local_addrs: Vec<SocketAddr>,
    workers: Workers,
    metrics: Option<std::net::TcpListener>,
}

impl Bound {
    /// The addresses listened on (port 0 resolved).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// Where `/metrics` will be served (port 0 resolved), if `metrics` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Starts accepting. Must be called inside a tokio runtime, which then
    /// serves `/metrics`.
    ///
    /// # Errors
    ///
    /// If the metrics listener cannot be registered with the runtime.
    pub fn serve(self, config: Config) -> io::Result<Server> {
        Server::start(self.listeners, self.local_addrs, config, Some(self.workers), self.metrics)
    }
}

/// Decrements the session count however the session task ends.
struct ActiveGuard(Arc<Shared>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    kill: watch::Receiver<bool>,
) {
    // Both are the same for every client of this listener, so they are
    // asked for once here instead of per session (a syscall each, and the
    // handshake rate is bound by syscalls): the address the client reached
    // is the listener's unless the listener is on the unspecified address,
    // and Linux copies TCP_NODELAY from a listening socket to the sockets
    // it accepts.
    let fixed_local = listener.local_addr().ok().filter(|a| !a.ip().is_unspecified());
    let nodelay_inherited = set_listener_nodelay(&listener);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            // The client gave up before we got to it: nothing wrong with us.
            Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset) => continue,
            Err(e) => {
                // EMFILE, ENFILE, ENOBUFS...: retrying at once would spin.
                tracing::warn!(error = %e, "accept failed; backing off");
                if let Some(metrics) = &shared.metrics {
                    metrics.accept_error();
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let live = shared.live();
        let before = shared.active.fetch_add(1, Ordering::SeqCst);
        if before >= live.config.max_connections {
            shared.active.fetch_sub(1, Ordering::SeqCst);
            refuse_over_cap(stream, peer, &shared);
            continue;
        }
        shared.peak.fetch_max(before + 1, Ordering::Relaxed);
        let guard = ActiveGuard(shared.clone());
        let mut kill = kill.clone();
        tokio::spawn(busy_poll::counted(async move {
            let guard = guard;
            let local = match fixed_local {
                Some(a) => a,
                None => match stream.local_addr() {
                    Ok(a) => a,
                    Err(_) => return,
                },
            };
            if !nodelay_inherited {
                let _ = stream.set_nodelay(true);
            }
            let cx = session::Context {
                config: &live.config,
                metrics: guard.0.metrics.as_deref().map(|m| (m, &live.rule_hits)),
                per_client: &guard.0.per_client,
            };
            tokio::select! {
                () = session::serve(stream, peer, local, cx) => {}
                _ = kill.wait_for(|k| *k) => {}
            }
        }));
    }
}

/// Sets TCP_NODELAY on a listening socket; true if its accepted sockets
/// get it from there (Linux copies the option at accept), so that sessions
/// need not set it one by one.
#[cfg(target_os = "linux")]
fn set_listener_nodelay(listener: &TcpListener) -> bool {
    use std::os::fd::AsRawFd;
    crate::net::enable_option(listener.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_NODELAY).is_ok()
}

#[cfg(not(target_os = "linux"))]
fn set_listener_nodelay(_: &TcpListener) -> bool {
    false
}

/// Refuses a client over the session cap, in a small bounded task: a SOCKS5
/// client (its first byte, if it comes within `FIRST_BYTE_WAIT`, is 5) gets
/// "no acceptable method", anyone else SOCKS4's 91.
fn refuse_over_cap(mut stream: TcpStream, peer: SocketAddr, shared: &Arc<Shared>) {
    if let Some(metrics) = &shared.metrics {
        metrics.refused(Refusal::MaxConnections);
    }
    if shared.refusing.fetch_add(1, Ordering::SeqCst) >= MAX_REFUSING {
        shared.refusing.fetch_sub(1, Ordering::SeqCst);
        return;
    }
    let shared = shared.clone();
    tokio::spawn(async move {
        let mut first = [0u8; 1];
        let socks5 = matches!(tokio::time::timeout(FIRST_BYTE_WAIT, stream.peek(&mut first)).await, Ok(Ok(1)))
            && first[0] == v5::VERSION;
        let reply = if socks5 {
            tracing::warn!(peer = %peer, proto = "socks5", "max_connections reached: refused");
            v5::MethodSelection::new(v5::Method::NoAcceptable).to_bytes().to_vec()
        } else {
            tracing::warn!(peer = %peer, reply = 91, "max_connections reached: refused");
            Reply::code_only(ReplyCode::Rejected).to_bytes().to_vec()
        };
        if tokio::time::timeout(Duration::from_secs(1), stream.write_all(&reply)).await.is_ok_and(|r| r.is_ok()) {
            session::linger_close(&mut stream).await;
        }
        shared.refusing.fetch_sub(1, Ordering::SeqCst);
    });
}

/// How often the daemon may tell systemd the number of live sessions
/// (`STATUS=`), and only when it changed.
const STATUS_EVERY: Duration = Duration::from_secs(5);

/// Runs the daemon: opens the listeners (sessions on a thread per core, see
/// [`Server::bind_per_core`]; the sockets of `systemd.listeners` instead of
/// `config.listen` when socket-activated), becomes `config.user` if set,
/// prints `listening <ADDR>` on stdout for each listener, then serves.
/// Reloads `config_path` on SIGHUP (a bad file is logged and the old config
/// kept; listeners and user do not change; `on_reload` gets the new config,
/// for the binary to apply its `log` level), and on SIGTERM/SIGINT drains
/// and returns. Tells systemd each step (READY, RELOADING, STOPPING, STATUS)
/// when it has a notify socket.
///
/// # Errors
///
/// If a listener cannot be opened, the user cannot be switched to, or
/// signals cannot be set up.
pub async fn run_daemon(
    config: Config,
    config_path: Option<PathBuf>,
    listen_override: Vec<SocketAddr>,
    systemd: Systemd,
    on_reload: impl Fn(&Config),
) -> io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;

    let Systemd { notify: notifier, listeners: inherited } = systemd;
    if !inherited.is_empty() {
        tracing::info!(
            sockets = inherited.len(),
            "socket activation: serving the sockets passed by systemd, not `listen`"
        );
    }
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let bound = Server::open_per_core(&config, cores, inherited)?;
    if let Some(user) = &config.user {
        match privileges::become_user(user).map_err(io::Error::other)? {
            Switch::Dropped => tracing::info!(user = %user.name, uid = user.uid, gid = user.gid, "running as user"),
            Switch::AlreadyThere => tracing::info!(user = %user.name, "already running as user"),
        }
    }
    let server = bound.serve(config)?;
    {
        let mut out = io::stdout().lock();
        // Before the `listening` lines: whoever waits for those has this one too.
        if let Some(addr) = server.metrics_addr() {
            writeln!(out, "metrics {addr}")?;
        }
        for addr in server.local_addrs() {
            writeln!(out, "listening {addr}")?;
        }
        out.flush()?;
    }
    for addr in server.local_addrs() {
        tracing::info!(addr = %addr, "listening");
    }
    let addrs: Vec<String> = server.local_addrs().iter().map(ToString::to_string).collect();
    let status = |sessions: usize| format!("STATUS=listening on {}; {sessions} live sessions", addrs.join(", "));
    let notify = |state: &str| {
        if let Some(n) = &notifier {
            n.notify(state);
        }
    };
    // The session count systemd last heard; the periodic STATUS only says a new one.
    let mut reported = server.active_sessions();
    notify(&format!("READY=1\n{}", status(reported)));
    let mut status_tick = tokio::time::interval_at(tokio::time::Instant::now() + STATUS_EVERY, STATUS_EVERY);
    status_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = hup.recv() => {
                notify(&systemd::reloading_message());
                let reloaded = reload(config_path.as_deref(), &listen_override, &server.config());
                if let (Some(metrics), Some(ok)) = (server.metrics(), reloaded.as_ref().map(Option::is_some)) {
                    metrics.reload(ok);
                }
                if let Some(Some(config)) = reloaded {
                    on_reload(&config);
                    server.reload(config);
                }
                reported = server.active_sessions();
                notify(&format!("READY=1\n{}", status(reported)));
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = status_tick.tick(), if notifier.is_some() => {
                let now = server.active_sessions();
                if now != reported {
                    reported = now;
                    notify(&status(now));
                }
            }
        }
    }
    tracing::info!(sessions = server.active_sessions(), "shutting down: draining sessions");
    notify(&format!("STOPPING=1\nSTATUS=draining {} live sessions", server.active_sessions()));
    // A second SIGTERM/SIGINT during the drain means "now": returning drops
    // the runtime, which cuts every session.
    tokio::select! {
        drained = server.shutdown() => tracing::info!(drained, "stopped"),
        _ = term.recv() => tracing::info!("second signal: stopped without draining"),
        _ = int.recv() => tracing::info!("second signal: stopped without draining"),
    }
    Ok(())
}

/// Reads the config file again: `None` if there is none, `Some(None)`
/// (logged) if it is bad.
fn reload(path: Option<&std::path::Path>, listen_override: &[SocketAddr], current: &Config) -> Option<Option<Config>> {
    let Some(path) = path else {
        tracing::info!("SIGHUP: no config file, nothing to reload");
        return None;
    };
    match Config::load(path) {
        Ok(mut config) => {
            if !listen_override.is_empty() {
                config.listen = listen_override.to_vec();
            }
            if config.listen != current.listen {
                tracing::warn!("SIGHUP: listen changed in the file; listeners stay as they are until restart");
            }
            if config.user != current.user {
                tracing::warn!("SIGHUP: user changed in the file; socks4d stays who it is until restart");
            }
            if config.metrics != current.metrics {
                tracing::warn!("SIGHUP: metrics changed in the file; /metrics stays as it is until restart");
                config.metrics = current.metrics;
            }
            tracing::info!(file = %path.display(), rules = config.rules.rules.len(), "SIGHUP: config reloaded");
            Some(Some(config))
        }
        Err(e) => {
            tracing::error!(error = %e, "SIGHUP: bad config, keeping the old one");
            Some(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SIGHUP's reload reaches the session threads' polling window.
    #[tokio::test]
    async fn reload_changes_busy_polling() {
        let config = Config { listen: vec!["127.0.0.1:0".parse().unwrap()], ..Config::default() };
        assert_eq!(config.busy_poll_us, crate::config::DEFAULT_BUSY_POLL_US);
        let server = Server::bind_per_core(config.clone(), 2).await.unwrap();
        let window = |s: &Server| s.workers.as_ref().unwrap().busy_poll();
        assert_eq!(window(&server), crate::config::DEFAULT_BUSY_POLL_US);
        server.reload(Config { busy_poll_us: 0, ..config });
        assert_eq!(window(&server), 0);
    }

    /// Sessions no longer set TCP_NODELAY themselves when the listener has
    /// it: this holds only if accepted sockets really inherit it.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn accepted_sockets_inherit_nodelay_from_the_listener() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (_client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        assert!(!accepted.unwrap().0.nodelay().unwrap(), "off by default, or the test proves nothing");
        assert!(set_listener_nodelay(&listener));
        let (_client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        assert!(accepted.unwrap().0.nodelay().unwrap());
    }
}
