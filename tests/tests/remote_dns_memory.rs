//! Remote DNS memory ownership, checked under valgrind: the addrinfo chains the shim answers with
//! are freed by libc's own freeaddrinfo (no leak, no invalid free), and the hostent answers live in
//! the caller's buffer (ERANGE when it is too small) or the shim's per-thread one (plain
//! gethostbyname).

use std::process::Command;
use std::time::Duration;

use socks4_tests::{Netns, NetnsFiles, TempDir, binaries, run_with_timeout};

const PROGRAM: &str = r#"
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

int main(void) {
    char ip[INET_ADDRSTRLEN] = "";
    for (int i = 0; i < 200; i++) {
        struct addrinfo hints = {0}, *res = NULL;
        hints.ai_flags = AI_CANONNAME;
        hints.ai_socktype = SOCK_STREAM;
        int rc = getaddrinfo("files.internal", "21", &hints, &res);
        if (rc != 0) { printf("getaddrinfo: %s\n", gai_strerror(rc)); return 1; }
        if (i == 0) {
            int n = 0;
            for (struct addrinfo *p = res; p; p = p->ai_next) n++;
            inet_ntop(AF_INET, &((struct sockaddr_in *)res->ai_addr)->sin_addr, ip, sizeof ip);
            printf("addrinfo %d %s %s\n", n, res->ai_canonname, ip);
        }
        freeaddrinfo(res);
    }
    struct hostent h, *r = NULL;
    char small[16], big[512];
    int herr = 0;
    int rc = gethostbyname_r("files.internal", &h, small, sizeof small, &r, &herr);
    printf("small %s %d\n", rc == ERANGE ? "ERANGE" : "?", r == NULL);
    rc = gethostbyname_r("files.internal", &h, big, sizeof big, &r, &herr);
    printf("byname_r %d %s %s\n", rc, r ? r->h_name : "-", r ? inet_ntoa(*(struct in_addr *)r->h_addr_list[0]) : "-");
    struct hostent *s = gethostbyname("files.internal");
    printf("byname %s %s\n", s ? s->h_name : "-", s ? inet_ntoa(*(struct in_addr *)s->h_addr_list[0]) : "-");
    struct hostent *g = gethostbyname2("files.internal", AF_INET6);
    printf("byname2 v6 %d %d\n", g == NULL, h_errno == NO_DATA);
    struct in_addr a;
    inet_pton(AF_INET, ip, &a);
    g = gethostbyaddr(&a, sizeof a, AF_INET);
    printf("byaddr %s\n", g ? g->h_name : "-");
    struct sockaddr_in sin = {0};
    sin.sin_family = AF_INET;
    sin.sin_addr = a;
    char host[8];
    printf("nameinfo short %d\n", getnameinfo((struct sockaddr *)&sin, sizeof sin, host, sizeof host, NULL, 0, 0) == EAI_OVERFLOW);
    return 0;
}
"#;

#[test]
fn answers_are_freed_by_libc_and_fit_the_callers_buffers_under_valgrind() {
    let dir = TempDir::new("rdns-valgrind");
    let src = dir.join("lookups.c");
    std::fs::write(&src, PROGRAM).unwrap();
    let exe = dir.join("lookups");
    let cc =
        run_with_timeout(Command::new("cc").arg("-O1").arg("-o").arg(&exe).arg(&src), b"", Duration::from_secs(60));
    assert!(cc.success(), "cc: {cc}");

    // In a namespace of its own with a resolver that knows nothing: a lookup that wrongly went
    // to the real resolver fails there, and stays there.
    let ns = Netns::new("rdns-mem");
    let _files = NetnsFiles::new(&ns, "127.0.0.1 localhost\n", "nameserver 127.0.0.1\n");
    let mut cmd = Command::new("valgrind");
    cmd.args(["-q", "--leak-check=full", "--errors-for-leak-kinds=definite", "--error-exitcode=9"])
        .arg(&exe)
        .env("LD_PRELOAD", &binaries().shim)
        .env("SOCKS4_SERVER", "127.0.0.1:9")
        .env("SOCKS4_REMOTE_DNS", "1")
        .env_remove("SOCKS4_DIRECT_NAMES");
    let out = run_with_timeout(&mut ns.wrap(&cmd), b"", Duration::from_secs(60));
    assert!(out.success(), "valgrind found errors or the program failed: {out}");
    let ip = out.stdout.lines().find_map(|l| l.strip_prefix("addrinfo 1 files.internal ")).unwrap_or("");
    assert!(ip.starts_with("240.0."), "{out}");
    for want in [
        "small ERANGE 1".to_string(),
        format!("byname_r 0 files.internal {ip}"),
        format!("byname files.internal {ip}"),
        "byname2 v6 1 1".to_string(),
        "byaddr files.internal".to_string(),
        "nameinfo short 1".to_string(),
    ] {
        assert!(out.stdout.lines().any(|l| l == want), "missing `{want}`: {out}");
    }
}
