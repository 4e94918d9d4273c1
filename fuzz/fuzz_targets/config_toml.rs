//! The configuration loader: TOML text plus `CRMBUS_<SECTION>_<KEY>` overrides.
//!
//! Input: TOML text, then optionally a NUL and environment lines `NAME=value`. A
//! configuration that loads must load again, unchanged, from its own TOML; an error must
//! say something.
#![no_main]

use crmbus_server::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (toml_text, env_text) = text.split_once('\0').unwrap_or((text, ""));
    let env: Vec<(String, String)> = env_text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    match Config::from_toml(toml_text, env) {
        Ok(config) => {
            let again = toml::to_string(&config).expect("a configuration serializes");
            let back = Config::from_toml(&again, Vec::new()).expect("its own TOML loads");
            assert_eq!(back, config);
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
