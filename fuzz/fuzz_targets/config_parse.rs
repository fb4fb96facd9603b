//! Fuzzes socks4d's config parser (`Config::parse` on TOML text): no panic
//! on any text, every error names the given file and a line inside the
//! text, and an accepted config printed back (`Display`, what `--check`
//! shows) parses to the same config.
#![no_main]

use libfuzzer_sys::fuzz_target;
use socks4_server::{Config, ConfigError};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // Known bug (pinned in server/tests/hostile_config.rs): non-ASCII white
    // space in `log` (e.g. U+00A0) panics inside tracing-subscriber's
    // EnvFilter::try_new, which Config::parse calls. Skipped so the fuzzer
    // goes on past it; remove once Config::parse guards against it.
    if text.chars().any(|c| c.is_whitespace() && !c.is_ascii()) {
        return;
    }
    // Known bug (pinned in server/tests/hostile_config.rs): a `log` filter
    // with a span field matcher (`a[{s=Z*....Z}]`) compiles a regex DFA of
    // exponential size: 20 dots take 95 s and 2.5 GB. Skipped likewise.
    if let Ok(table) = text.parse::<toml::Table>()
        && table.get("log").and_then(toml::Value::as_str).is_some_and(|l| l.contains('['))
    {
        return;
    }
    match Config::parse(text, "fuzz.toml") {
        Ok(config) => {
            // Known bug (pinned in server/tests/hostile_config.rs): Display
            // does not escape strings, so a name, user or log filter holding
            // `"`, `\` or a control character does not print back as valid
            // TOML. Skip those until it is fixed, so the fuzzer goes on.
            let needs_escape = |s: &str| s.chars().any(|c| c == '"' || c == '\\' || c.is_control());
            let rules = &config.rules.rules;
            if needs_escape(&config.log)
                || rules.iter().any(|r| {
                    r.name.as_deref().is_some_and(needs_escape)
                        || r.users.iter().any(|u| match u {
                            socks4_server::rules::UserPattern::Exact(id) => needs_escape(&String::from_utf8_lossy(id)),
                            socks4_server::rules::UserPattern::Any => false,
                        })
                })
            {
                return;
            }
            let printed = config.to_string();
            match Config::parse(&printed, "printed.toml") {
                Ok(again) => assert_eq!(again, config, "printed config differs:\n{printed}\n--- from ---\n{text}"),
                Err(e) => panic!("printed config does not parse: {e}\n{printed}\n--- from ---\n{text}"),
            }
        }
        Err(ConfigError::Invalid { file, line, key, message }) => {
            assert_eq!(file, "fuzz.toml");
            let lines = text.split('\n').count();
            assert!((1..=lines).contains(&line), "line {line} of a {lines}-line text ({key}: {message})");
            // Not asserted: a non-empty message. toml gives "" for a value
            // cut off by the end of the file (`key = `): found by this
            // target, pinned in server/tests/hostile_config.rs.
            let _ = message;
        }
        Err(e @ ConfigError::Read { .. }) => panic!("parse cannot fail to read: {e}"),
    }
});
