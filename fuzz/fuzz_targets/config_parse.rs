//! Fuzzes socks4d's config parser (`Config::parse` on TOML text): no panic
//! on any text, every error names the given file and a line inside the
//! text (or, for `users_file`, the users file it names), and an accepted
//! config printed back (`Display`, what `--check` shows) parses to the same
//! config.
#![no_main]

use libfuzzer_sys::fuzz_target;
use socks4_server::{Config, ConfigError};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match Config::parse(text, "fuzz.toml") {
        Ok(config) => {
            let printed = config.to_string();
            match Config::parse(&printed, "printed.toml") {
                Ok(again) => assert_eq!(again, config, "printed config differs:\n{printed}\n--- from ---\n{text}"),
                Err(e) => panic!("printed config does not parse: {e}\n{printed}\n--- from ---\n{text}"),
            }
        }
        // A users file the text names (any path on the machine) has lines of its own.
        Err(ConfigError::Invalid { file, key, .. }) if file != "fuzz.toml" => {
            assert_eq!(key, "users_file", "an error in {file} that is not the users file's");
            assert!(text.contains(&file), "error names {file}, which the text does not");
        }
        Err(ConfigError::Invalid { file, line, key, message }) => {
            assert_eq!(file, "fuzz.toml");
            let lines = text.split('\n').count();
            assert!((1..=lines).contains(&line), "line {line} of a {lines}-line text ({key}: {message})");
            assert!(!message.trim().is_empty(), "empty message at line {line} ({key})");
        }
        Err(e @ ConfigError::Read { .. }) => panic!("parse cannot fail to read: {e}"),
    }
});
