//! Last known positions of terminals, and a spatial index to find the
//! nearest ones to an incident without scanning every terminal.
//!
//! Positions are indexed as points on a sphere (Earth-centred coordinates in
//! metres), so straight-line distances in the index are chord lengths: for
//! the few kilometres of a dispatch they equal great-circle distances to
//! well under a metre, and no map projection is needed.

use std::collections::HashMap;
use std::sync::Mutex;

use ptt_codec::TerminalId;
use rstar::primitives::GeomWithData;
use rstar::RTree;

/// Mean Earth radius (IUGG), metres.
const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// A reported position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fix {
    /// Latitude, 1e-7 degrees.
    pub lat_e7: i32,
    /// Longitude, 1e-7 degrees.
    pub lon_e7: i32,
    /// Accuracy radius reported by the terminal, metres.
    pub accuracy_m: u16,
    /// When the gateway received it, Unix ms.
    pub at_ms: u64,
}

type Point = GeomWithData<[f64; 3], TerminalId>;

fn xyz(lat_e7: i32, lon_e7: i32) -> [f64; 3] {
    let lat = (f64::from(lat_e7) * 1e-7).to_radians();
    let lon = (f64::from(lon_e7) * 1e-7).to_radians();
    [
        EARTH_RADIUS_M * lat.cos() * lon.cos(),
        EARTH_RADIUS_M * lat.cos() * lon.sin(),
        EARTH_RADIUS_M * lat.sin(),
    ]
}

/// Great-circle distance in metres between two positions.
pub fn distance_m(a: (i32, i32), b: (i32, i32)) -> f64 {
    let (p, q) = (xyz(a.0, a.1), xyz(b.0, b.1));
    let chord = ((p[0] - q[0]).powi(2) + (p[1] - q[1]).powi(2) + (p[2] - q[2]).powi(2)).sqrt();
    2.0 * EARTH_RADIUS_M * (chord / (2.0 * EARTH_RADIUS_M)).min(1.0).asin()
}

#[derive(Debug, Default)]
struct Inner {
    last: HashMap<TerminalId, Fix>,
    tree: RTree<Point>,
}

/// Last known positions, indexed.
#[derive(Debug, Default)]
pub struct Positions {
    inner: Mutex<Inner>,
}

impl Positions {
    /// Records `terminal`'s new position, replacing the old one.
    pub fn update(&self, terminal: TerminalId, fix: Fix) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = inner.last.insert(terminal, fix) {
            inner
                .tree
                .remove(&Point::new(xyz(old.lat_e7, old.lon_e7), terminal));
        }
        inner
            .tree
            .insert(Point::new(xyz(fix.lat_e7, fix.lon_e7), terminal));
    }

    /// The last known position of `terminal`.
    pub fn last(&self, terminal: TerminalId) -> Option<Fix> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.last.get(&terminal).copied()
    }

    /// Up to `k` terminals nearest to `(lat_e7, lon_e7)`, within `radius_m`,
    /// whose fix is not older than `max_age_ms` at `now_ms`, and that `keep`
    /// accepts; nearest first, with their distance in metres.
    pub fn nearest(
        &self,
        (lat_e7, lon_e7): (i32, i32),
        k: usize,
        radius_m: f64,
        now_ms: u64,
        max_age_ms: u64,
        mut keep: impl FnMut(TerminalId) -> bool,
    ) -> Vec<(TerminalId, f64)> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let centre = xyz(lat_e7, lon_e7);
        // Chord length of the radius: the index measures straight lines.
        let chord = 2.0 * EARTH_RADIUS_M * (radius_m / (2.0 * EARTH_RADIUS_M)).min(1.0).sin();
        let mut out = Vec::new();
        for p in inner.tree.nearest_neighbor_iter(&centre) {
            if out.len() >= k {
                break;
            }
            let d2: f64 = p
                .geom()
                .iter()
                .zip(centre)
                .map(|(a, b)| (a - b).powi(2))
                .sum();
            if d2.sqrt() > chord {
                break;
            }
            let Some(fix) = inner.last.get(&p.data) else {
                continue;
            };
            if now_ms.saturating_sub(fix.at_ms) > max_age_ms || !keep(p.data) {
                continue;
            }
            out.push((
                p.data,
                distance_m((lat_e7, lon_e7), (fix.lat_e7, fix.lon_e7)),
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fix(lat: f64, lon: f64, at_ms: u64) -> Fix {
        Fix {
            lat_e7: (lat * 1e7) as i32,
            lon_e7: (lon * 1e7) as i32,
            accuracy_m: 5,
            at_ms,
        }
    }

    #[test]
    fn distances_match_known_values() {
        // One degree of latitude is about 111.2 km.
        let d = distance_m((0, 0), (10_000_000, 0));
        assert!((d - 111_195.0).abs() < 50.0, "{d}");
        // 0.001 degree of longitude at 29.08 N (Jinhua) is about 97 m.
        let d = distance_m((290_800_000, 1_196_400_000), (290_800_000, 1_196_410_000));
        assert!((d - 97.2).abs() < 1.0, "{d}");
    }

    #[test]
    fn nearest_respects_k_radius_age_and_filter() {
        let p = Positions::default();
        let incident = (290_800_000, 1_196_400_000);
        // Terminal n stands n * ~97 m east of the incident.
        for n in 1..=10u32 {
            p.update(
                TerminalId(n),
                fix(29.08, 119.64 + 0.001 * f64::from(n), 1_000),
            );
        }
        let got = p.nearest(incident, 3, 10_000.0, 2_000, 60_000, |_| true);
        assert_eq!(
            got.iter().map(|(t, _)| t.0).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert!((got[0].1 - 97.2).abs() < 1.0);
        // Radius 350 m: only the first three.
        assert_eq!(
            p.nearest(incident, 10, 350.0, 2_000, 60_000, |_| true)
                .len(),
            3
        );
        // Filter out terminal 1.
        let got = p.nearest(incident, 1, 10_000.0, 2_000, 60_000, |t| t.0 != 1);
        assert_eq!(got[0].0, TerminalId(2));
        // Stale fixes are not available.
        assert!(p
            .nearest(incident, 3, 10_000.0, 100_000, 60_000, |_| true)
            .is_empty());
        // Moving replaces the old point.
        p.update(TerminalId(10), fix(29.08, 119.64, 90_000));
        let got = p.nearest(incident, 1, 10_000.0, 100_000, 60_000, |_| true);
        assert_eq!(got[0].0, TerminalId(10));
        assert_eq!(p.last(TerminalId(10)).unwrap().at_ms, 90_000);
    }
}
