//! The PTT gateway: a QUIC server relaying group voice and alerts between
//! terminals of a city's governance tree.
//!
//! Layout, from the wire inwards:
//! - [`server`]: the listener; [`Gateway::run`] takes its endpoint and a
//!   shutdown future, so tests bind port 0 and stop cleanly.
//! - `session`: one terminal's connection (handshake and `Hello`, the
//!   control stream and its dispatch, voice datagrams).
//! - `ops`: what sessions ask of the gateway (alerts, SOS, positions,
//!   attachments, drills), each handler taking the session's context.
//! - `hub`: the state sessions share, as a handle with methods (registry of
//!   live terminals, groups, alert desk, positions, SOS book).
//! - `group`: a talk group at run time, the async shell around the
//!   sans-I/O `ptt_gateway_core::group::Machine` (membership and
//!   [`floor::Machine`]), publishing [`fanout::Snapshot`]s.
//! - `outbox`: the queue of control messages to one terminal.
//! - [`fanout`]: the lock-free voice relay path.
//! - [`floor`]: sans-I/O floor control (TS 24.380).
//! - [`org`]: the governance tree, authorisation policy and credentials.
//! - [`alert`]: alert rules at the current time (the rules are the core's).
//! - [`store`]: the SQLite store, one file per group of tables.
//! - [`net`]: the network thread that carries every packet.
//! - [`config`], [`tls`]: configuration and certificates.
//! - [`recorder`]: every talk burst to an Ogg Opus file, off the voice path.
//! - [`reload`]: org reload's outcome and the files `ptt-gateway reload`
//!   talks to the running gateway through.
//!
//! Dependencies point one way: `server` -> `session` -> `ops` -> `hub` ->
//! `group` -> `outbox`, with the leaves (`store`, `alert`, `drill`,
//! `location`, `fanout`, `metrics`, `clock`) below them and the rules in
//! `ptt-gateway-core` and `ptt-org`. No module imports one above it.

pub mod alert;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod drill;
pub mod fanout;
mod group;
pub mod http;
mod hub;
pub mod link;
pub mod location;
pub mod media;
pub mod metrics;
pub mod net;
mod ops;
mod outbox;
pub mod recorder;
pub mod reload;
pub mod server;
mod session;
pub mod store;
pub mod tls;
mod webtransport;

pub use ptt_gateway_core::{admission, floor};
pub use ptt_org as org;

pub use config::Config;
pub use server::Gateway;

#[cfg(test)]
mod layering {
    use std::path::Path;

    /// The driver's layers, top first: a module may import only layers
    /// after its own.
    const LAYERS: &[&str] = &[
        "server",
        "http",
        "session",
        "webtransport",
        "ops",
        "hub",
        "group",
        "cluster",
        "outbox",
        "link",
    ];

    /// Every `.rs` file of module `name` (a file or a folder).
    fn sources(name: &str) -> Vec<(String, String)> {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let file = src.join(format!("{name}.rs"));
        if file.exists() {
            let text = std::fs::read_to_string(&file).expect("readable source");
            return vec![(file.display().to_string(), text)];
        }
        std::fs::read_dir(src.join(name))
            .expect("a module file or folder")
            .map(|e| e.expect("readable folder").path())
            .filter(|p| p.extension().is_some_and(|x| x == "rs"))
            .map(|p| {
                let text = std::fs::read_to_string(&p).expect("readable source");
                (p.display().to_string(), text)
            })
            .collect()
    }

    #[test]
    fn no_module_imports_a_layer_above_it() {
        for (i, layer) in LAYERS.iter().enumerate() {
            for (path, text) in sources(layer) {
                for above in &LAYERS[..i] {
                    let needle = format!("crate::{above}");
                    let hit = text.lines().find(|l| {
                        let code = l.trim_start();
                        !code.starts_with("//")
                            && code.match_indices(&needle).any(|(at, _)| {
                                !code[at + needle.len()..].starts_with(char::is_alphanumeric)
                            })
                    });
                    assert!(
                        hit.is_none(),
                        "{path} imports {above}, a layer above it: {hit:?}"
                    );
                }
            }
        }
    }
}
