//! Unit tests of the settings: sources and precedence, upstream URLs, routes and chains, and the
//! errors that name file, line and key.

use super::*;
use crate::upstream::Protocol;
use std::collections::HashMap;

fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    move |k| map.get(k).cloned()
}

fn from_env(pairs: &[(&str, &str)]) -> Config {
    let (e, err) = parse_env(env(pairs));
    assert_eq!(err, None);
    merge(Partial::default(), e, || None).unwrap()
}

fn from_file(text: &str) -> Config {
    merge(parse_file("/f.toml", text).unwrap(), Partial::default(), || None).unwrap()
}

fn file_error(text: &str) -> ConfigError {
    match parse_file("/x.toml", text) {
        Err(e) => e,
        Ok(p) => merge(p, Partial::default(), || None).unwrap_err(),
    }
}

fn urls(c: &Config, via: &Via) -> Vec<String> {
    match via {
        Via::Failover(l) | Via::Chain(l) => l.iter().map(|&i| c.upstreams[i].to_string()).collect(),
        Via::Direct => vec!["direct".into()],
        Via::Block => vec!["block".into()],
    }
}

#[test]
fn defaults_without_file_or_env() {
    let c = merge(Partial::default(), Partial::default(), || Some(b"alice".to_vec())).unwrap();
    assert_eq!(urls(&c, &c.default), ["127.0.0.1:1080"]);
    assert_eq!(c.first_hops, ["127.0.0.1:1080".parse().unwrap()]);
    assert_eq!(c.user, b"alice");
    assert!(c.is_direct("127.0.0.5".parse().unwrap()));
    assert!(c.is_direct("::1".parse().unwrap()));
    assert!(!c.is_direct("10.0.0.1".parse().unwrap()));
    assert!(c.is_direct("::ffff:127.0.0.1".parse().unwrap()));
    assert_eq!(c.timeout, DEFAULT_TIMEOUT);
    assert_eq!(c.backoff, DEFAULT_BACKOFF);
    assert!(c.routes.is_empty());
}

#[test]
fn parses_every_file_key() {
    let text = "server = \"10.0.0.1:1081\"\nuser = \"bob\"\ndirect = [\"192.168.0.0/16\", \"10.9.9.9\"]\n\
                timeout = 2.5\nbackoff = 7\ndebug = true\n[bind]\nproxy_fixed_ports = true\n";
    let p = parse_file("/etc/socks4.toml", text).unwrap();
    assert_eq!(p.user.as_deref(), Some(&b"bob"[..]));
    assert_eq!(p.direct, Some(vec!["192.168.0.0/16".parse().unwrap(), "10.9.9.9/32".parse().unwrap()]));
    assert_eq!(p.timeout, Some(Duration::from_millis(2500)));
    assert_eq!(p.backoff, Some(Duration::from_secs(7)));
    assert_eq!(p.debug, Some(true));
    assert_eq!(p.proxy_fixed_ports, Some(true));
    let c = merge(p, Partial::default(), || None).unwrap();
    assert_eq!(urls(&c, &c.default), ["10.0.0.1:1081"]);
}

#[test]
fn server_is_a_url_or_a_failover_list() {
    let c = from_env(&[("SOCKS4_SERVER", "socks5h://10.0.0.1:1080, socks4://10.0.0.2, 10.0.0.3:9")]);
    assert_eq!(urls(&c, &c.default), ["socks5h://10.0.0.1:1080", "socks4://10.0.0.2:1080", "10.0.0.3:9"]);
    let kinds: Vec<_> = c.upstreams.iter().map(|u| (u.protocol(), u.sends_names)).collect();
    assert_eq!(kinds, [(Protocol::Socks5, true), (Protocol::Socks4, false), (Protocol::Socks4, true)]);
    assert_eq!(c.first_hops.len(), 3);
    let c = from_file("server = [\"socks5://10.0.0.1\", \"socks5://10.0.0.2\"]\n");
    assert_eq!(urls(&c, &c.default), ["socks5://10.0.0.1:1080", "socks5://10.0.0.2:1080"]);
    assert_eq!(from_env(&[("SOCKS4_SERVER", "direct")]).default, Via::Direct);
}

#[test]
fn remote_dns_defaults_on_unless_the_bare_server_is_on_loopback() {
    let names = |pairs: &[(&str, &str)]| from_env(pairs).upstreams[0].sends_names;
    assert!(!names(&[]));
    assert!(names(&[("SOCKS4_SERVER", "10.0.0.1:1080")]));
    assert!(!names(&[("SOCKS4_SERVER", "10.0.0.1:1080"), ("SOCKS4_REMOTE_DNS", "0")]));
    assert!(names(&[("SOCKS4_REMOTE_DNS", "1")]));
    // An explicit scheme decides, whatever remote_dns says.
    assert!(names(&[("SOCKS4_SERVER", "socks5h://127.0.0.1:1080"), ("SOCKS4_REMOTE_DNS", "0")]));
    assert!(!names(&[("SOCKS4_SERVER", "socks4://10.0.0.1:1080"), ("SOCKS4_REMOTE_DNS", "1")]));
}

#[test]
fn routes_are_parsed_in_order() {
    let c = from_file(
        r#"
server = "socks5://10.0.0.1:1080"
[[route]]
to = ["10.1.0.0/16", "2001:db8::/32", "*.corp.example", "db.example."]
ports = [22, "8000-8100"]
via = ["socks5h://10.0.0.2:1080", "socks4://10.0.0.3:1080"]
[[route]]
to = ["192.168.0.0/16"]
via = "direct"
[[route]]
to = ["*"]
ports = ["25"]
via = "block"
[[route]]
to = ["10.9.0.0/16"]
chain = ["socks5://10.0.0.1:1080", "socks4a://10.0.0.4:1080"]
"#,
    );
    assert_eq!(c.routes.len(), 4);
    let r = &c.routes[0];
    assert_eq!(r.line, Some(3));
    assert_eq!(
        r.to,
        [
            Dest::Net("10.1.0.0/16".parse().unwrap()),
            Dest::Net("2001:db8::/32".parse().unwrap()),
            Dest::Suffix("corp.example".parse().unwrap()),
            Dest::Host("db.example".parse().unwrap()),
        ]
    );
    assert_eq!(r.ports, [(22, 22), (8000, 8100)]);
    assert!(r.matches_port(8050) && !r.matches_port(80));
    assert_eq!(urls(&c, &r.via), ["socks5h://10.0.0.2:1080", "socks4://10.0.0.3:1080"]);
    assert_eq!(c.routes[1].via, Via::Direct);
    assert_eq!((c.routes[2].to.clone(), c.routes[2].via.clone()), (vec![Dest::Any], Via::Block));
    assert!(matches!(c.routes[3].via, Via::Chain(_)));
    assert_eq!(urls(&c, &c.routes[3].via), ["socks5://10.0.0.1:1080", "socks4a://10.0.0.4:1080"]);
    // Each URL once: the default server and the chain's first hop share a slot.
    assert_eq!(c.upstreams.len(), 4);
    // The chain's second hop is reached through the first, not by the shim.
    assert!(!c.first_hops.contains(&"10.0.0.4:1080".parse().unwrap()));
    assert!(c.uses_placeholders());
}

#[test]
fn route_destinations_match_addresses_or_names() {
    let d = |s: &str| Dest::parse(s).unwrap();
    assert!(d("10.0.0.0/8").matches_ip("10.1.2.3".parse().unwrap()));
    assert!(!d("10.0.0.0/8").matches_name("ten.example"));
    assert!(d("*.corp.example").matches_name("a.b.CORP.example."));
    assert!(!d("*.corp.example").matches_name("corp.example"));
    assert!(d("corp.example").matches_name("Corp.Example"));
    assert!(!d("corp.example").matches_ip("10.1.2.3".parse().unwrap()));
    assert!(d("*").matches_name("x") && d("*").matches_ip("::1".parse().unwrap()));
    for bad in ["10.0.0.0/33", "::/0x", "a b", "*.", "1.2.3"] {
        assert!(Dest::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn bad_routes_name_line_and_key() {
    let cases = [
        ("[[route]]\nvia = \"direct\"\n", 1, "route"),
        ("[[route]]\nto = []\nvia = \"direct\"\n", 1, "route.to"),
        ("[[route]]\nto = [\"10.0.0.0/8\", \"ten dot\"]\nvia = \"direct\"\n", 2, "route.to"),
        ("[[route]]\nto = [\"*\"]\nports = [0]\nvia = \"direct\"\n", 3, "route.ports"),
        ("[[route]]\nto = [\"*\"]\nports = [\"9-1\"]\nvia = \"direct\"\n", 3, "route.ports"),
        ("[[route]]\nto = [\"*\"]\n", 1, "route"),
        ("[[route]]\nto = [\"*\"]\nvia = \"direct\"\nchain = [\"socks5://a:1\"]\n", 1, "route"),
        ("\n[[route]]\nto = [\"*\"]\nvia = \"http://proxy:3128\"\n", 4, "route.via"),
        ("[[route]]\nto = [\"*\"]\nvia = [\"socks5://10.0.0.1\", \"direct\"]\n", 3, "route.via"),
        ("[[route]]\nto = [\"*\"]\nchain = \"block\"\n", 3, "route.chain"),
        ("[[route]]\nto = [\"*\"]\nvia = 5\n", 3, "route.via"),
        ("[[route]]\nto = [\"*\"]\nvia = \"direct\"\nvai = 1\n", 4, "route.vai"),
    ];
    for (text, line, key) in cases {
        let e = file_error(text);
        assert_eq!((e.line, e.key.as_str()), (Some(line), key), "{text}: {e}");
        assert_eq!(e.to_string().lines().count(), 1);
    }
}

#[test]
fn unresolvable_first_hop_and_unreachable_chain_hops_are_errors() {
    let e = file_error("user = \"u\"\nserver = \"socks5://no-such-host.invalid:1080\"\n");
    assert_eq!((e.line, e.key.as_str()), (Some(2), "server"), "{e}");
    assert!(e.message.contains("does not resolve"), "{e}");
    // A hop behind a socks5h:// hop is sent by name, never resolved here.
    let c = from_file("[[route]]\nto = [\"*\"]\nchain = [\"socks5h://10.0.0.1\", \"socks5://hidden.invalid:1080\"]\n");
    let hidden = c.upstreams.iter().find(|u| u.url.host == "hidden.invalid").unwrap();
    assert_eq!(hidden.addr, None);
    // Behind a hop that resolves locally it must resolve here.
    let e = file_error("\n[[route]]\nto = [\"*\"]\nchain = [\"socks5://10.0.0.1\", \"socks5://hidden.invalid\"]\n");
    assert_eq!((e.line, e.key.as_str()), (Some(2), "route"), "{e}");
    assert!(e.message.contains("socks5h://"), "{e}");
    // SOCKS4 cannot carry an IPv6 hop address.
    let e = file_error("[[route]]\nto = [\"*\"]\nchain = [\"socks4://10.0.0.1\", \"socks5://[2001:db8::1]:1080\"]\n");
    assert!(e.message.contains("IPv6"), "{e}");
}

#[test]
fn passwords_come_from_the_url_the_environment_or_a_file() {
    let login = |c: &Config| c.upstreams[0].login().map(|(u, p)| (u.to_vec(), p.to_vec()));
    let c = from_file("server = \"socks5://alice:s3cret@10.0.0.1:1080\"\n");
    assert_eq!(login(&c), Some((b"alice".to_vec(), b"s3cret".to_vec())));
    let c = from_env(&[("SOCKS4_SERVER", "socks5://alice@10.0.0.1"), ("SOCKS4_PASSWORD", "fromenv")]);
    assert_eq!(login(&c), Some((b"alice".to_vec(), b"fromenv".to_vec())));
    let dir = std::env::temp_dir().join(format!("socks4-pw-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pw = dir.join("pw");
    std::fs::write(&pw, "fromfile\nignored\n").unwrap();
    let c = from_file(&format!("server = \"socks5://alice@10.0.0.1\"\npassword_file = \"{}\"\n", pw.display()));
    assert_eq!(login(&c), Some((b"alice".to_vec(), b"fromfile".to_vec())));
    let e = file_error(&format!("server = \"socks5://alice@10.0.0.1\"\npassword_file = \"{}/none\"\n", dir.display()));
    assert_eq!((e.line, e.key.as_str()), (Some(2), "password_file"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
    let e = file_error("server = \"socks5://alice@10.0.0.1\"\n");
    assert!(e.message.contains("no password") && e.message.contains("SOCKS4_PASSWORD"), "{e}");
    // A password never shows in an error.
    let e = file_error("server = \"socks4://alice:s3cret@10.0.0.1\"\n");
    assert!(!e.to_string().contains("s3cret"), "{e}");
}

#[test]
fn direct_names_from_file_and_env() {
    let p = parse_file("f", "remote_dns = true\ndirect_names = [\"*.Corp.example\", \".lan\", \"host\"]\n").unwrap();
    assert_eq!(p.remote_dns, Some(true));
    let names = |n: &[&str]| Some(n.iter().map(|n| n.parse().unwrap()).collect::<Vec<HostName>>());
    assert_eq!(p.direct_names, names(&["corp.example", "lan", "host"]));
    let (env, err) = parse_env(env(&[("SOCKS4_DIRECT_NAMES", "a.example, b.example.")]));
    assert_eq!(err, None);
    assert_eq!(env.direct_names, names(&["a.example", "b.example"]));
}

#[test]
fn bad_remote_dns_settings_are_named() {
    let e = parse_file("/x.toml", "debug = true\ndirect_names = [\"ok.example\", \"10.0.0.0/8\"]\n").unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (Some(2), "direct_names"));
    let e = parse_file("/x.toml", "remote_dns = \"maybe\"\n").unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (Some(1), "remote_dns"));
    let (_, err) = parse_env(env(&[("SOCKS4_REMOTE_DNS", "maybe")]));
    assert_eq!(err.unwrap().key, "SOCKS4_REMOTE_DNS");
    let (_, err) = parse_env(env(&[("SOCKS4_DIRECT_NAMES", "a b")]));
    assert_eq!(err.unwrap().key, "SOCKS4_DIRECT_NAMES");
}

#[test]
fn integer_timeout_is_seconds() {
    assert_eq!(parse_file("f", "timeout = 3").unwrap().timeout, Some(Duration::from_secs(3)));
}

#[test]
fn bad_value_names_line_and_key() {
    let e = file_error("user = \"u\"\n\nserver = \"nonsense\"\n");
    assert_eq!((e.origin.as_str(), e.line, e.key.as_str()), ("/x.toml", Some(3), "server"));
    let e = file_error("direct = [\n  \"10.0.0.0/8\",\n  \"10.0.0.0/99\",\n]\n");
    assert_eq!((e.line, e.key.as_str()), (Some(3), "direct"));
    let e = file_error("timeout = -1\n");
    assert_eq!((e.line, e.key.as_str()), (Some(1), "timeout"));
    let e = file_error("backoff = 0\n");
    assert_eq!((e.line, e.key.as_str()), (Some(1), "backoff"));
    let e = file_error("server = 1080\n");
    assert_eq!((e.line, e.key.as_str()), (Some(1), "server"));
}

#[test]
fn unknown_key_and_wrong_type_name_line_and_key() {
    let e = parse_file("/x.toml", "user = \"u\"\nservr = \"1.2.3.4:1\"\n").unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (Some(2), "servr"));
    assert!(e.message.contains("servr"), "{}", e.message);
    let e = parse_file("/x.toml", "user = \"u\"\n[bind]\nproxy_fixed_ports = \"yes\"\n").unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (Some(3), "bind.proxy_fixed_ports"));
    let e = parse_file("/x.toml", "debug = true\ntimeout = = 3\n").unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (Some(2), "timeout"));
    assert_eq!(e.to_string().lines().count(), 1);
}

#[test]
fn environment_overrides_file() {
    let file = parse_file("f", "server = \"10.0.0.1:1081\"\ndirect = [\"10.0.0.0/8\"]\nuser = \"file\"\n").unwrap();
    let (env, err) = parse_env(env(&[("SOCKS4_SERVER", "127.0.0.1:9"), ("SOCKS4_USER", "envuser")]));
    assert_eq!(err, None);
    let c = merge(file, env, || None).unwrap();
    assert_eq!(urls(&c, &c.default), ["127.0.0.1:9"]);
    assert_eq!(c.user, b"envuser");
    assert_eq!(c.direct, vec!["10.0.0.0/8".parse::<IpNet>().unwrap()]);
}

#[test]
fn empty_direct_proxies_everything() {
    let c = from_env(&[("SOCKS4_DIRECT", "")]);
    assert!(c.direct.is_empty());
    assert!(!c.is_direct("127.0.0.1".parse().unwrap()));
}

#[test]
fn direct_list_from_env() {
    let (env, _) = parse_env(env(&[("SOCKS4_DIRECT", " 10.0.0.0/8, ::1 ,192.0.2.7")]));
    assert_eq!(env.direct.unwrap().len(), 3);
}

#[test]
fn bad_env_var_is_named_and_others_still_apply() {
    let (p, err) = parse_env(env(&[("SOCKS4_TIMEOUT", "soon"), ("SOCKS4_USER", "u")]));
    let err = err.unwrap();
    assert_eq!(err.key, "SOCKS4_TIMEOUT");
    assert!(err.to_string().starts_with("config SOCKS4_TIMEOUT: "));
    assert_eq!(p.user.as_deref(), Some(&b"u"[..]));
    let (_, err) = parse_env(env(&[("SOCKS4_DIRECT", "10.0.0.0/8,banana")]));
    assert_eq!(err.unwrap().key, "SOCKS4_DIRECT");
    let (_, err) = parse_env(env(&[("SOCKS4_SERVER", "socks5://a:1,ftp://b:2")]));
    assert_eq!(err.unwrap().key, "SOCKS4_SERVER");
    let (_, err) = parse_env(env(&[("SOCKS4_BACKOFF", "-3")]));
    assert_eq!(err.unwrap().key, "SOCKS4_BACKOFF");
}

/// The example configuration in the README parses (its names are not resolved here).
#[test]
fn the_readme_example_parses() {
    let readme = include_str!("../../../README.md");
    let start = readme.find("# /etc/socks4.toml (or SOCKS4_CONF").expect("the example in the README");
    let text = &readme[start..];
    let text = &text[..text.find("```").expect("the end of the example")];
    let p = parse_file("README.md", text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let routes = p.routes.expect("routes");
    assert_eq!(routes.len(), 4);
    assert!(matches!(&routes[1].via, ViaSpec::Chain(hops) if hops.len() == 2));
    assert_eq!(routes[3].ports, [(25, 25), (465, 465), (587, 587)]);
    assert!(matches!(&p.server, Some((ViaSpec::Failover(urls), _)) if urls.len() == 2));
}

/// A configuration to tell apart from the fail-closed one.
fn loaded() -> Config {
    let mut c = Config::fail_closed(Vec::new());
    c.broken = false;
    c.timeout = Duration::from_secs(7);
    c
}

#[test]
fn the_first_caller_loads_and_the_others_wait_for_it() {
    let once = &LoadOnce::new();
    let (loading_tx, loading_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|s| {
        let loader = s.spawn(move || {
            let load = || {
                loading_tx.send(()).unwrap();
                go_rx.recv_timeout(Duration::from_secs(5)).unwrap();
                loaded()
            };
            once.get(load, Duration::from_secs(10)).clone()
        });
        loading_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        let waiter = s.spawn(|| once.get(|| panic!("loaded twice"), Duration::from_secs(10)).clone());
        std::thread::sleep(Duration::from_millis(200));
        go_tx.send(()).unwrap();
        assert_eq!(waiter.join().unwrap(), loaded(), "the waiter got the fail-closed configuration");
        assert_eq!(loader.join().unwrap(), loaded());
    });
    assert_eq!(once.get(|| panic!("loaded twice"), Duration::ZERO), &loaded());
}

#[test]
fn a_load_that_takes_too_long_fails_closed_after_the_patience() {
    let once = &LoadOnce::new();
    let (loading_tx, loading_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|s| {
        s.spawn(move || {
            let load = || {
                loading_tx.send(()).unwrap();
                go_rx.recv_timeout(Duration::from_secs(5)).unwrap();
                loaded()
            };
            once.get(load, Duration::from_secs(10));
        });
        loading_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        let start = Instant::now();
        let c = once.get(|| panic!("loaded twice"), Duration::from_millis(200));
        let waited = start.elapsed();
        assert!(c.broken && c.default == Via::Block, "{c:?}");
        assert!(waited >= Duration::from_millis(200) && waited < Duration::from_secs(4), "{waited:?}");
        go_tx.send(()).unwrap();
    });
    assert_eq!(once.get(|| panic!("loaded twice"), Duration::ZERO), &loaded());
}

#[test]
fn debug_variable_words() {
    let debug = |v: &str| {
        let (p, err) = parse_env(env(&[("SOCKS4_DEBUG", v)]));
        err.map_or(Ok(p.debug), |e| Err(e.key))
    };
    for off in ["", "0", "false", "no", "off", " off "] {
        assert_eq!(debug(off), Ok(Some(false)), "{off:?}");
    }
    for on in ["1", "true", "yes", "on"] {
        assert_eq!(debug(on), Ok(Some(true)), "{on:?}");
    }
    assert_eq!(debug("2"), Err("SOCKS4_DEBUG".to_owned()));
}

#[test]
fn a_server_list_needs_one_upstream_and_at_most_256() {
    let (_, err) = parse_env(env(&[("SOCKS4_SERVER", " , ")]));
    let err = err.unwrap();
    assert_eq!((err.key.as_str(), err.message.as_str()), ("SOCKS4_SERVER", "no upstream: give at least one URL"));
    let e = file_error("debug = true\nserver = []\n");
    assert_eq!((e.line, e.key.as_str(), e.message.as_str()), (Some(2), "server", "no upstream: give at least one URL"));
    let list = |n: usize| vec!["10.0.0.1:1080"; n];
    assert!(
        matches!(parse_via(&list(MAX_UPSTREAMS), true), Ok(ViaSpec::Failover(urls)) if urls.len() == MAX_UPSTREAMS)
    );
    assert_eq!(parse_via(&list(MAX_UPSTREAMS + 1), true), Err("more than 256 upstreams".to_owned()));
}

#[test]
fn direct_and_block_stand_alone() {
    for word in ["direct", "BLOCK"] {
        let e = file_error(&format!("[[route]]\nto = [\"*\"]\nvia = [\"socks5://10.0.0.1\", \"{word}\"]\n"));
        assert_eq!((e.line, e.key.as_str()), (Some(3), "route.via"), "{e}");
        assert_eq!(e.message, format!("`{word}` stands alone; it is not an upstream in a list"));
    }
}

/// Placeholders are on when some route sends names to its server or routes by name.
#[test]
fn placeholders_when_a_route_sends_or_matches_names() {
    let base = "server = \"socks5://10.0.0.1:1080\"\n[[route]]\n";
    assert!(!from_file("server = \"socks5://10.0.0.1:1080\"\n").uses_placeholders());
    assert!(from_file("server = \"socks5h://10.0.0.1:1080\"\n").uses_placeholders());
    assert!(!from_file(&format!("{base}to = [\"10.0.0.0/8\"]\nvia = \"socks5://10.0.0.2\"\n")).uses_placeholders());
    assert!(from_file(&format!("{base}to = [\"10.0.0.0/8\"]\nvia = \"socks5h://10.0.0.2\"\n")).uses_placeholders());
    assert!(from_file(&format!("{base}to = [\"printer.lan\"]\nvia = \"direct\"\n")).uses_placeholders());
    assert!(from_file(&format!("{base}to = [\"*.lan\"]\nvia = \"block\"\n")).uses_placeholders());
    let mut c = from_file("server = \"socks5h://10.0.0.1:1080\"\n");
    c.broken = true;
    assert!(!c.uses_placeholders(), "a broken configuration proxies nothing");
}

/// Where toml names no key, the error's key is read from its line: the `[table]` header itself,
/// a key under its table, none for a line without one; an error at the very end belongs to the
/// last line written.
#[test]
fn the_key_of_an_error_is_read_from_its_line() {
    let key = |text: &str| parse_file("/x.toml", text).map(|_| ()).map_err(|e| (e.line, e.key));
    assert_eq!(key("[bind]\n[bind]\n"), Err((Some(2), "bind".to_owned())));
    assert_eq!(key("debug = true\n[bind\n"), Err((Some(2), "bind".to_owned())));
    assert_eq!(key("[bind]\nproxy_fixed_ports = true\nfoo.bar = 1\n"), Err((Some(3), "bind.foo.bar".to_owned())));
    assert_eq!(key("[bind]\n= 3\n"), Err((Some(2), String::new())));
    assert_eq!(key("debug = true\ntimeout = [1,\n\n"), Err((Some(2), "timeout".to_owned())));
    assert_eq!(key("debug = true\ntimeout = [1,"), Err((Some(2), "timeout".to_owned())));
}

/// A file of exactly MAX_FILE bytes is read whole; one byte more is refused.
#[test]
fn config_files_up_to_one_mebibyte() {
    let dir = std::env::temp_dir().join(format!("socks4-max-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("f.toml");
    let size = usize::try_from(MAX_FILE).unwrap();
    std::fs::write(&path, "#".repeat(size)).unwrap();
    assert_eq!(read_text(path.to_str().unwrap()).map(|t| t.len()).map_err(|e| e.to_string()), Ok(size));
    std::fs::write(&path, "#".repeat(size + 1)).unwrap();
    let e = read_text(path.to_str().unwrap()).unwrap_err();
    assert_eq!((e.kind(), e.to_string()), (std::io::ErrorKind::InvalidInput, "larger than 1048576 bytes".to_owned()));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// SOCKS4_CONF must exist; the default file may be missing, but nothing else may be wrong with it.
#[test]
fn a_missing_file_is_an_error_only_when_named() {
    let dir = std::env::temp_dir().join(format!("socks4-read-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("none.toml");
    let missing = missing.to_str().unwrap();
    assert_eq!(read_file(missing, false), (Partial::default(), None));
    let (p, e) = read_file(missing, true);
    let e = e.unwrap();
    assert_eq!(
        (p, e.origin.as_str(), e.line, e.key.as_str()),
        (Partial::default(), "SOCKS4_CONF", None, "SOCKS4_CONF")
    );
    assert!(e.message.starts_with(&format!("cannot read {missing}: ")), "{e}");
    // A directory where the default file should be is no missing file.
    let (_, e) = read_file(dir.to_str().unwrap(), false);
    assert!(e.unwrap().message.contains("not a regular file"));
    let file = dir.join("f.toml");
    std::fs::write(&file, "user = \"bob\"\n").unwrap();
    let (p, e) = read_file(file.to_str().unwrap(), false);
    assert_eq!((p.user, e), (Some(b"bob".to_vec()), None));
    std::fs::write(&file, "user = 1\n").unwrap();
    let (p, e) = read_file(file.to_str().unwrap(), true);
    assert_eq!((p, e.map(|e| (e.line, e.key))), (Partial::default(), Some((Some(1), "user".to_owned()))));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A chain hop's address is checked against what the hop before can carry: only SOCKS4 cannot
/// carry IPv6.
#[test]
fn chain_hops_by_address() {
    let chain = |a: &str, b: &str| from_file(&format!("[[route]]\nto = [\"*\"]\nchain = [\"{a}\", \"{b}\"]\n"));
    let c = chain("socks4://10.0.0.1", "socks5://10.0.0.2:1081");
    assert_eq!(urls(&c, &c.routes[0].via), ["socks4://10.0.0.1:1080", "socks5://10.0.0.2:1081"]);
    let c = chain("socks5://10.0.0.1", "socks5://[2001:db8::2]:1081");
    let Via::Chain(hops) = &c.routes[0].via else { panic!("{:?}", c.routes[0].via) };
    assert_eq!(c.upstreams[hops[1]].addr, Some("[2001:db8::2]:1081".parse().unwrap()));
}

/// The first line of a password file is the password: 1 to 255 bytes.
#[test]
fn password_file_line_is_1_to_255_bytes() {
    let dir = std::env::temp_dir().join(format!("socks4-pwlen-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pw = dir.join("pw");
    let login = |content: String| {
        std::fs::write(&pw, content).unwrap();
        let text = format!("server = \"socks5://alice@10.0.0.1\"\npassword_file = \"{}\"\n", pw.display());
        match parse_file("/x.toml", &text).and_then(|p| merge(p, Partial::default(), || None)) {
            Ok(c) => Ok(c.upstreams[0].login().map(|(_, p)| p.len())),
            Err(e) => Err((e.line, e.key, e.message.contains("must be the password (1 to 255 bytes)"))),
        }
    };
    assert_eq!(login("p".repeat(255) + "\n"), Ok(Some(255)));
    let refused = Err((Some(2), "password_file".to_owned(), true));
    assert_eq!(login("p".repeat(256) + "\n"), refused);
    assert_eq!(login("\nsecond line\n".to_owned()), refused);
    assert_eq!(login(String::new()), refused);
    std::fs::remove_dir_all(&dir).unwrap();
}
