use std::path::Path;

use super::auth::ProvisioningKey;
use super::*;

const SMALL: &str = r#"
[auth]
key_file = "city.key"

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
name = "夜市共治站"

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
id = 302
name = "钱辅警"
role = "auxiliary_police"
kind = "handheld"
node = 5

[[terminal]]
id = 501
name = "张伟"
role = "security_guard"
kind = "handheld"
node = 5

[[terminal]]
id = 503
name = "刘芳"
role = "volunteer"
kind = "phone_app"
node = 5
"#;

fn org() -> Org {
    Org::from_toml(SMALL, Path::new("/etc/ptt")).unwrap()
}

fn rights(org: &Org, policy: &Policy, t: u32, g: u32) -> Result<(bool, bool), Denied> {
    org.rights(policy, TerminalId(t), GroupId(g))
        .map(|r| (r.listen, r.talk))
}

#[test]
fn parses_the_tree_with_chinese_names() {
    let org = org();
    assert_eq!(org.root().name, "金华市");
    assert_eq!(org.node(GroupId(5)).unwrap().name, "共治单元1");
    assert_eq!(org.terminal(TerminalId(501)).unwrap().name, "张伟");
    assert_eq!(org.groups().count(), 9);
    assert_eq!(org.terminals().count(), 6);
    assert_eq!(org.children(4), &[5, 6]);
    assert_eq!(org.key_file(), Some(Path::new("/etc/ptt/city.key")));
    assert!(org.is_ancestor_or_self(3, 5));
    assert!(org.is_ancestor_or_self(5, 5));
    assert!(!org.is_ancestor_or_self(9, 5));
    assert_eq!(org.ancestor_of_kind(5, NodeKind::PoliceStation), Some(3));
    assert_eq!(org.ancestor_of_kind(5, NodeKind::Unit), Some(5));
    assert_eq!(org.ancestor_of_kind(2, NodeKind::Unit), None);
}

fn err(text: &str) -> String {
    Org::from_toml(text, Path::new("."))
        .unwrap_err()
        .to_string()
}

#[test]
fn validation_errors_name_the_offender() {
    let city = "[[node]]\nid = 1\nkind = \"city\"\nname = \"c\"\n";
    let node = |id: u32, parent: u32, kind: &str| {
        format!("[[node]]\nid = {id}\nparent = {parent}\nkind = \"{kind}\"\nname = \"n\"\n")
    };
    let term = |id: u32, node: u32| {
        format!("[[terminal]]\nid = {id}\nname = \"t\"\nrole = \"staff\"\nkind = \"handheld\"\nnode = {node}\n")
    };
    assert!(err("").contains("no city"));
    assert!(
        err(&format!("{city}{}", node(1, 1, "district"))).contains("node 1 is"),
        "duplicate or second root"
    );
    assert!(err(&format!("{city}{}", node(2, 7, "district"))).contains("parent 7"));
    assert!(err(&format!("{city}{}", node(2, 1, "unit")))
        .contains("node 2 (Unit) cannot be under node 1 (City)"));
    assert!(err(&format!("{city}{}", node(0, 1, "district"))).contains("id 0"));
    assert!(err(&format!(
        "{city}[[node]]\nid = 8\nkind = \"city\"\nname = \"x\"\n"
    ))
    .contains("node 8 is a second root"));
    assert!(err(&format!("{city}{}", term(5, 9))).contains("terminal 5 belongs to node 9"));
    assert!(
        err(&format!("{city}{}{}", term(5, 1), term(5, 1))).contains("terminal 5 is defined twice")
    );
    assert!(err(&format!("{city}{}", term(0, 1))).contains("terminal id 0"));
    assert!(err(&format!("{city}bogus = 1\n")).contains("bogus"));
    assert!(err(&format!("{city}{}", term(5, 1).replace("staff", "chef"))).contains("chef"));
}

#[test]
fn default_rights() {
    let org = org();
    let p = Policy::default();
    // Guard: own unit talks, own station listens, elsewhere nothing.
    assert_eq!(rights(&org, &p, 501, 5), Ok((true, true)));
    assert_eq!(rights(&org, &p, 501, 4), Ok((true, false)));
    assert_eq!(rights(&org, &p, 501, 6), Err(Denied::NotAllowed));
    assert_eq!(rights(&org, &p, 501, 3), Err(Denied::NotAllowed));
    assert_eq!(rights(&org, &p, 503, 5), Ok((true, true)));
    // Police anywhere under their police station, not beyond.
    for g in [3, 4, 5, 6] {
        assert_eq!(rights(&org, &p, 301, g), Ok((true, true)), "police in {g}");
        assert_eq!(
            rights(&org, &p, 302, g),
            Ok((true, true)),
            "auxiliary police in {g}"
        );
    }
    assert_eq!(rights(&org, &p, 301, 11), Err(Denied::NotAllowed));
    assert_eq!(rights(&org, &p, 301, 2), Err(Denied::NotAllowed));
    // Station console: its subtree; city console: everything.
    assert_eq!(rights(&org, &p, 300, 6), Ok((true, true)));
    assert_eq!(rights(&org, &p, 300, 11), Err(Denied::NotAllowed));
    for g in org.groups() {
        assert_eq!(rights(&org, &p, 100, g.0), Ok((true, true)));
    }
    assert_eq!(rights(&org, &p, 999, 5), Err(Denied::UnknownTerminal));
    assert_eq!(rights(&org, &p, 501, 999), Err(Denied::UnknownGroup));
}

#[test]
fn policy_is_configurable() {
    let org = org();
    let p: Policy = toml::from_str(
        "member_listens_station = false\npolice_scope = \"district\"\nconsole_talk = false\n[priority]\nsecurity_guard = 90\n",
    )
    .unwrap();
    assert_eq!(rights(&org, &p, 501, 4), Err(Denied::NotAllowed));
    assert_eq!(rights(&org, &p, 301, 11), Ok((true, true)));
    assert_eq!(rights(&org, &p, 300, 5), Ok((true, false)));
    assert_eq!(p.priority(Role::SecurityGuard, TerminalKind::Handheld), 90);
    assert!(toml::from_str::<Policy>("polise_scope = \"district\"").is_err());
}

#[test]
fn priorities_by_role() {
    let p = Policy::default();
    let pr = |r| p.priority(r, TerminalKind::Handheld);
    assert!(pr(Role::Dispatcher) > pr(Role::Police));
    assert!(pr(Role::Police) > pr(Role::AuxiliaryPolice));
    assert!(pr(Role::AuxiliaryPolice) > pr(Role::SecurityGuard));
    assert!(pr(Role::SecurityGuard) > pr(Role::Staff));
    assert_eq!(pr(Role::Staff), pr(Role::Volunteer));
    assert_eq!(p.priority(Role::Staff, TerminalKind::Console), 200);
}

#[test]
fn credentials_derive_and_verify() {
    let key = ProvisioningKey::from_bytes(std::array::from_fn(|i| i as u8));
    let c1 = key.credential(TerminalId(1));
    // Pinned: changing the derivation would lock every provisioned terminal out.
    assert_eq!(hex::encode(c1), PINNED_T1);
    assert!(key.verify(TerminalId(1), &c1));
    assert!(!key.verify(TerminalId(2), &c1));
    assert!(!key.verify(TerminalId(1), &c1[..31]));
    assert!(!key.verify(TerminalId(1), &[]));
    assert_ne!(key.credential(TerminalId(2)), c1);
    let other = ProvisioningKey::generate();
    assert!(!other.verify(TerminalId(1), &c1));
    assert_eq!(format!("{key:?}"), "ProvisioningKey(..)");
}

const PINNED_T1: &str = "b111583fd8af925e7e6886da082159334e6c5f49c58dac5edcf32bc604fd33c0";

#[test]
fn key_files_round_trip_and_reject_garbage() {
    let dir = std::env::temp_dir().join(format!("ptt-key-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("k.key");
    let key = ProvisioningKey::generate();
    key.save(&path).unwrap();
    assert_eq!(ProvisioningKey::load(&path).unwrap().to_hex(), key.to_hex());
    assert!(ProvisioningKey::from_hex("abcd").is_err());
    assert!(ProvisioningKey::from_hex(&"zz".repeat(32)).is_err());
    assert!(ProvisioningKey::from_hex(&format!("  {}\n", "ab".repeat(32))).is_ok());
    assert!(ProvisioningKey::load(&dir.join("missing")).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[cfg(unix)]
#[test]
fn a_key_file_group_or_others_can_access_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("city.key");
    let key = ProvisioningKey::generate();
    key.save(&path).unwrap();
    assert_eq!(mode(&path), 0o600);
    assert!(ProvisioningKey::load(&path).is_ok(), "0600 is accepted");
    set_mode(&path, 0o400);
    assert!(ProvisioningKey::load(&path).is_ok(), "0400 is accepted");

    for wide in [0o644, 0o640, 0o604, 0o620, 0o660] {
        set_mode(&path, wide);
        let err = ProvisioningKey::load(&path).unwrap_err();
        assert!(
            matches!(err, auth::KeyError::Exposed { mode, .. } if mode == wide),
            "{wide:o}: {err:?}"
        );
        let text = err.to_string();
        assert!(text.contains(&format!("mode 0{wide:o}")), "{text}");
        assert!(
            text.contains(&format!("chmod 600 {}", path.display())),
            "{text}"
        );
    }

    // Saving over a wide file narrows it before writing the key.
    set_mode(&path, 0o644);
    key.save(&path).unwrap();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(ProvisioningKey::load(&path).unwrap().to_hex(), key.to_hex());
}
