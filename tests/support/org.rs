//! A small hand-written org for end-to-end tests.
//!
//! ```text
//! 1 金华市 (city)                       console 100
//! └─ 2 婺城区 (district)
//!    ├─ 3 城东派出所 (police station)   console 300, police 301
//!    │  └─ 4 万达广场共治站 (station)
//!    │     ├─ 5 共治单元1 (unit)         guards 501 张伟, 502; staff 503; police 504
//!    │     └─ 6 共治单元2 (unit)         guard 601
//!    └─ 9 城西派出所 (police station)   police 901
//!       └─ 10 中心医院共治站 (station)
//!          └─ 11 共治单元1 (unit)        guard 1101
//! ```

use ptt_codec::GroupId;

/// The org file text.
pub const ORG: &str = r#"
[[node]]
id = 1
kind = "city"
name = "金华市"

[[node]]
id = 2
parent = 1
kind = "district"
name = "婺城区"

[[node]]
id = 3
parent = 2
kind = "police_station"
name = "城东派出所"

[[node]]
id = 4
parent = 3
kind = "station"
name = "万达广场共治站"

[[node]]
id = 5
parent = 4
kind = "unit"
name = "共治单元1"

[[node]]
id = 6
parent = 4
kind = "unit"
name = "共治单元2"

[[node]]
id = 9
parent = 2
kind = "police_station"
name = "城西派出所"

[[node]]
id = 10
parent = 9
kind = "station"
name = "中心医院共治站"

[[node]]
id = 11
parent = 10
kind = "unit"
name = "共治单元1"

[[terminal]]
id = 100
name = "市指挥中心"
role = "dispatcher"
kind = "console"
node = 1

[[terminal]]
id = 300
name = "城东派出所指挥室"
role = "dispatcher"
kind = "console"
node = 3

[[terminal]]
id = 301
name = "李警官"
role = "police"
kind = "handheld"
node = 3

[[terminal]]
id = 501
name = "张伟"
role = "security_guard"
kind = "handheld"
node = 5

[[terminal]]
id = 502
name = "王强"
role = "security_guard"
kind = "phone_app"
node = 5

[[terminal]]
id = 503
name = "刘芳"
role = "staff"
kind = "phone_app"
node = 5

[[terminal]]
id = 504
name = "陈警官"
role = "police"
kind = "handheld"
node = 5

[[terminal]]
id = 601
name = "赵磊"
role = "security_guard"
kind = "handheld"
node = 6

[[terminal]]
id = 901
name = "孙警官"
role = "police"
kind = "handheld"
node = 9

[[terminal]]
id = 1101
name = "周杰"
role = "security_guard"
kind = "screen_terminal"
node = 11
"#;

/// City group.
pub const CITY: GroupId = GroupId(1);
/// The co-governance station of units A and B.
pub const STATION_A: GroupId = GroupId(4);
/// Unit A (共治单元1 at 万达广场).
pub const UNIT_A: GroupId = GroupId(5);
/// Unit B, same station.
pub const UNIT_B: GroupId = GroupId(6);
/// A unit under another police station.
pub const OTHER_UNIT: GroupId = GroupId(11);

/// City command centre console.
pub const CITY_CONSOLE: u32 = 100;
/// Police station 3's command room console.
pub const CONSOLE_PS: u32 = 300;
/// A police officer of police station 3.
pub const POLICE_PS: u32 = 301;
/// Guards of unit A.
pub const GUARD_A1: u32 = 501;
/// Second guard of unit A.
pub const GUARD_A2: u32 = 502;
/// Staff member of unit A.
pub const STAFF_A3: u32 = 503;
/// Police officer leading unit A.
pub const POLICE_A: u32 = 504;
/// Guard of unit B.
pub const GUARD_B1: u32 = 601;
