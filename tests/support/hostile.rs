//! The hostile-client harness (issue 11): the real `ptt-gateway serve`
//! process on a loopback port, legit traffic beside the attack, probes
//! timing what must keep working, and raw attack tools.
//!
//! A hostile test starts a [`GatewayProcess`] serving [`ORG`], starts a
//! [`Scene`] (legit voice in [`VOICE_GROUP`], the SOS and dispatch probes,
//! a [`Watch`] on the process's memory and data directory), runs one attack
//! for a few seconds with the tools below, and checks the [`Outcome`] with
//! [`Outcome::assert_unharmed`]: the bounds every attack must stay within.
//!
//! Every attacker connects from a UDP socket of its own, as a separate
//! handset would, so its packets never compete with the legit terminals'
//! in the test's own socket buffers.

use std::time::Duration;

use ptt_codec::GroupId;

mod attack;
mod legit;
mod process;

pub use attack::*;
pub use legit::*;
pub use process::*;

/// The org the hostile suite's gateway serves.
///
/// ```text
/// 1 City (city)                         console 100
/// └─ 2 District (district)               console 200 (monitors unit 5)
///    ├─ 3 East (police station)          console 300
///    │  └─ 4 Plaza (station)
///    │     ├─ 5 Plaza unit 1 (unit)      501 attacker; 502 talks, 503, 504 listen
///    │     ├─ 6 Plaza unit 2 (unit)      601, 602 (attackers of their own unit)
///    │     └─ 7 Plaza unit 3 (unit)      701 the SOS probe
///    └─ 9 West (police station)          console 900 (the dispatch probe)
///       └─ 10 Hospital (station)
///          └─ 11 Hospital unit 1 (unit)  1101 the guard dispatched
/// ```
///
/// Legit voice runs in unit 5, where the member attacker 501 is: a
/// stolen handset's owner is in a unit with people talking. SOS attacks
/// come from unit 6, whose floor an SOS takes, never from the voice
/// unit: a real SOS pre-empting legit voice is the gateway doing its job.
pub const ORG: &str = r#"
[[node]]
id = 1
kind = "city"
name = "City"

[[node]]
id = 2
parent = 1
kind = "district"
name = "District"

[[node]]
id = 3
parent = 2
kind = "police_station"
name = "East"

[[node]]
id = 4
parent = 3
kind = "station"
name = "Plaza"

[[node]]
id = 5
parent = 4
kind = "unit"
name = "Plaza unit 1"

[[node]]
id = 6
parent = 4
kind = "unit"
name = "Plaza unit 2"

[[node]]
id = 7
parent = 4
kind = "unit"
name = "Plaza unit 3"

[[node]]
id = 9
parent = 2
kind = "police_station"
name = "West"

[[node]]
id = 10
parent = 9
kind = "station"
name = "Hospital"

[[node]]
id = 11
parent = 10
kind = "unit"
name = "Hospital unit 1"

[[terminal]]
id = 100
name = "City command"
role = "dispatcher"
kind = "console"
node = 1

[[terminal]]
id = 200
name = "District command"
role = "dispatcher"
kind = "console"
node = 2

[[terminal]]
id = 300
name = "East command room"
role = "dispatcher"
kind = "console"
node = 3

[[terminal]]
id = 501
name = "Attacker"
role = "security_guard"
kind = "handheld"
node = 5

[[terminal]]
id = 502
name = "Talker"
role = "security_guard"
kind = "handheld"
node = 5

[[terminal]]
id = 503
name = "Listener staff"
role = "staff"
kind = "phone_app"
node = 5

[[terminal]]
id = 504
name = "Listener police"
role = "police"
kind = "handheld"
node = 5

[[terminal]]
id = 601
name = "Second attacker"
role = "security_guard"
kind = "handheld"
node = 6

[[terminal]]
id = 602
name = "Accomplice"
role = "security_guard"
kind = "handheld"
node = 6

[[terminal]]
id = 701
name = "SOS probe"
role = "security_guard"
kind = "handheld"
node = 7

[[terminal]]
id = 900
name = "West command room"
role = "dispatcher"
kind = "console"
node = 9

[[terminal]]
id = 1101
name = "Dispatched guard"
role = "security_guard"
kind = "handheld"
node = 11
"#;

/// The city command console.
pub const CITY_CONSOLE: u32 = 100;
/// The district console; it monitors the voice group.
pub const DISTRICT_CONSOLE: u32 = 200;
/// The East police station's command room: the station console of units
/// 5, 6 and 7 (their reports and SOS go there).
pub const EAST_CONSOLE: u32 = 300;
/// The member attacker: an ordinary guard of the voice unit.
pub const ATTACKER: u32 = 501;
/// The legit talker of the voice unit.
pub const TALKER: u32 = 502;
/// The legit listeners of the voice group: two members and the district
/// console monitoring it.
pub const LISTENERS: [u32; 3] = [503, 504, DISTRICT_CONSOLE];
/// A second member attacker, in a unit of his own (SOS attacks).
pub const SECOND_ATTACKER: u32 = 601;
/// The second attacker's unit mate (the reader that never reads).
pub const ACCOMPLICE: u32 = 602;
/// Raises an SOS now and then to time its storing.
pub const SOS_PROBE: u32 = 701;
/// Dispatches the guard of another police station to time delivery.
pub const DISPATCH_CONSOLE: u32 = 900;
/// The guard the dispatch probe reaches.
pub const DISPATCHED_GUARD: u32 = 1101;
/// The voice group: unit 5.
pub const VOICE_GROUP: GroupId = GroupId(5);
/// The attacker's co-governance station group (listen-only for him).
pub const STATION: GroupId = GroupId(4);
/// The second attacker's unit.
pub const SECOND_UNIT: GroupId = GroupId(6);
/// The SOS probe's unit.
pub const PROBE_UNIT: GroupId = GroupId(7);
/// The dispatched guard's unit, under another police station.
pub const OTHER_UNIT: GroupId = GroupId(11);

/// Legit voice frames a listener must receive, of those the talker sent
/// (issue 11 item 10).
pub const MIN_VOICE_DELIVERED: f64 = 0.99;
/// An SOS raised during an attack is stored within this (issue 11 item 10).
pub const SOS_STORED_WITHIN: Duration = Duration::from_secs(1);
/// A dispatch sent during an attack reaches an online guard within this
/// (issue 11 item 10).
pub const DISPATCH_DELIVERED_WITHIN: Duration = Duration::from_secs(8);

/// The most memory the gateway process may hold while it serves the
/// suite's dozen terminals through an attack: 128 MiB.
///
/// Where it comes from: the debug gateway holds 13 MiB serving the suite's
/// terminals (measured before every attack: 12.4 to 12.9 MiB; at most
/// 19 MiB through the floods it withstands today). An honest load adds at
/// most the attachments in flight, each held whole today: a 4 MiB photo
/// per upload (`transport.max_uni_streams` = 2 at once per terminal) and
/// per push to a screen or console, about 40 MiB for a few terminals at
/// once; and quinn's buffers of the ~15 connections, which reading peers
/// keep well under 1 MiB each. 13 + 40 + 15 is under 70 MiB; 128 MiB
/// leaves nearly twice that for allocator slack and a busy machine, and
/// still fails every attack of issue 11 that held memory: they reached
/// 270 MB/s (attack 2), 1,388 MiB (attack 1), 7.2 MiB per connection
/// before `Hello` (attack 9, where the suite opens 30 such connections).
pub const RSS_BOUND: u64 = 128 * 1024 * 1024;

/// How much the data directory may grow during one attack: 32 MiB.
///
/// The gateway has no attachment quota yet (issue 11 item 2); whoever adds
/// it sets the per-terminal default so that one terminal's quota (seven
/// photos of 4 MiB, say) plus what an attack's refusals and the probes
/// write (under 1 MiB here: a few dozen SOS, dispatches and receipts)
/// stays under this. Unused uploads grew the directory by 19 MiB/s in the
/// security review and by 75 MiB/s in this suite (attack 3).
pub const DISK_BOUND: u64 = 32 * 1024 * 1024;
