//! Where simulated members are: every unit gets a site in a made-up city
//! (the org file has no coordinates), and its members walk around it.

use rand::Rng;

/// Centre of the simulated city: Jinhua, 29.079 N 119.647 E.
pub const CITY_CENTRE_E7: (i32, i32) = (290_790_000, 1_196_474_000);

/// Metres per degree of latitude (and of longitude at the equator).
const M_PER_DEG: f64 = 111_195.0;

/// `origin` moved `east_m` metres east and `north_m` metres north, in 1e-7
/// degrees (flat-earth: fine for the few kilometres of one city).
pub fn offset_e7(origin: (i32, i32), east_m: f64, north_m: f64) -> (i32, i32) {
    let lat = f64::from(origin.0) * 1e-7;
    let dlat = north_m / M_PER_DEG;
    let dlon = east_m / (M_PER_DEG * lat.to_radians().cos().max(1e-6));
    (
        (f64::from(origin.0) + dlat * 1e7).round() as i32,
        (f64::from(origin.1) + dlon * 1e7).round() as i32,
    )
}

/// A stable pseudo-random value in -1..1 for `(id, salt)` (splitmix64), so
/// the same org always gives the same sites.
fn unit_noise(id: u32, salt: u64) -> f64 {
    let mut z = u64::from(id)
        .wrapping_add(salt.wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
}

/// A police station's place: within 10 km of the city centre.
pub fn station_site(station: u32) -> (i32, i32) {
    offset_e7(
        CITY_CENTRE_E7,
        unit_noise(station, 1) * 10_000.0,
        unit_noise(station, 2) * 10_000.0,
    )
}

/// A unit's site: within 1.5 km of its police station.
pub fn unit_site(station: u32, unit: u32) -> (i32, i32) {
    offset_e7(
        station_site(station),
        unit_noise(unit, 3) * 1500.0,
        unit_noise(unit, 4) * 1500.0,
    )
}

/// One member walking around its unit's site: a steady speed, a heading
/// that wanders, and walls `radius_m` east, west, north and south of the
/// site it bounces off.
#[derive(Debug, Clone)]
pub struct Walker {
    site: (i32, i32),
    radius_m: f64,
    speed_mps: f64,
    heading: f64,
    /// Metres east and north of the site.
    pub east: f64,
    /// See `east`.
    pub north: f64,
}

impl Walker {
    /// A member somewhere within `radius_m` of `site`, walking at a speed
    /// drawn from a fifth of `max_speed_mps` up to it.
    pub fn new(site: (i32, i32), radius_m: f64, max_speed_mps: f64, rng: &mut impl Rng) -> Walker {
        let r = radius_m.max(1.0);
        let max = max_speed_mps.max(0.0);
        Walker {
            site,
            radius_m: r,
            speed_mps: if max > 0.0 {
                rng.gen_range(max / 5.0..=max)
            } else {
                0.0
            },
            heading: rng.gen_range(0.0..std::f64::consts::TAU),
            east: rng.gen_range(-r..=r),
            north: rng.gen_range(-r..=r),
        }
    }

    /// Walks for `dt_s` seconds: the heading turns by up to 45 degrees,
    /// and the member bounces off the walls.
    pub fn step(&mut self, dt_s: f64, rng: &mut impl Rng) {
        use std::f64::consts::FRAC_PI_4;
        self.heading += rng.gen_range(-FRAC_PI_4..=FRAC_PI_4);
        let d = self.speed_mps * dt_s.max(0.0);
        self.east += d * self.heading.cos();
        self.north += d * self.heading.sin();
        let r = self.radius_m;
        // Reflect off each wall (a step longer than the box is folded back
        // as often as needed), turning away from it.
        let (east, north) = (reflect(self.east, r), reflect(self.north, r));
        if east != self.east {
            self.heading = std::f64::consts::PI - self.heading;
        }
        if north != self.north {
            self.heading = -self.heading;
        }
        (self.east, self.north) = (east, north);
    }

    /// Where the member is, 1e-7 degrees.
    pub fn position_e7(&self) -> (i32, i32) {
        offset_e7(self.site, self.east, self.north)
    }
}

/// One member on patrol around its unit's site: a closed loop of 4-7
/// waypoints at 40 % to 100 % of `radius_m` from the site, walked at a
/// steady pace, round and round, as a guard walks the same beat all
/// evening. Pure: the position is a function of the distance walked.
#[derive(Debug, Clone)]
pub struct Patrol {
    site: (i32, i32),
    /// Waypoints, metres east and north of the site; the loop closes from
    /// the last back to the first.
    points: Vec<(f64, f64)>,
    /// Length of the whole loop, metres.
    length_m: f64,
    speed_mps: f64,
    /// Metres walked along the loop so far (from the first waypoint).
    walked_m: f64,
}

impl Patrol {
    /// A loop around `site` within `radius_m`, walked at a speed drawn from
    /// half of `max_speed_mps` up to it, starting somewhere on the loop.
    /// The same `rng` state gives the same patrol.
    pub fn new(site: (i32, i32), radius_m: f64, max_speed_mps: f64, rng: &mut impl Rng) -> Patrol {
        use std::f64::consts::TAU;
        let r = radius_m.max(1.0);
        let n = rng.gen_range(4..=7);
        let turn = rng.gen_range(0.0..TAU);
        // Waypoints in order of angle around the site: the loop does not
        // cross itself.
        let points: Vec<(f64, f64)> = (0..n)
            .map(|i| {
                let slot = TAU / f64::from(n);
                let angle = turn + slot * f64::from(i) + rng.gen_range(0.0..slot * 0.5);
                let d = rng.gen_range(0.4 * r..=r);
                (d * angle.cos(), d * angle.sin())
            })
            .collect();
        let length_m = (0..points.len())
            .map(|i| distance(points[i], points[(i + 1) % points.len()]))
            .sum();
        let max = max_speed_mps.max(0.0);
        Patrol {
            site,
            speed_mps: if max > 0.0 {
                rng.gen_range(max / 2.0..=max)
            } else {
                0.0
            },
            walked_m: rng.gen_range(0.0..=length_m),
            points,
            length_m,
        }
    }

    /// Walks on for `dt_s` seconds.
    pub fn step(&mut self, dt_s: f64) {
        self.walked_m = (self.walked_m + self.speed_mps * dt_s.max(0.0)).rem_euclid(self.length_m);
    }

    /// Metres east and north of the site, where the member is on its loop.
    pub fn offset_m(&self) -> (f64, f64) {
        let mut left = self.walked_m.rem_euclid(self.length_m);
        for i in 0..self.points.len() {
            let (a, b) = (self.points[i], self.points[(i + 1) % self.points.len()]);
            let leg = distance(a, b);
            if left <= leg {
                let f = if leg > 0.0 { left / leg } else { 0.0 };
                return (a.0 + (b.0 - a.0) * f, a.1 + (b.1 - a.1) * f);
            }
            left -= leg;
        }
        self.points[0]
    }

    /// Where the member is, 1e-7 degrees.
    pub fn position_e7(&self) -> (i32, i32) {
        let (east, north) = self.offset_m();
        offset_e7(self.site, east, north)
    }

    /// The loop's waypoints, metres east and north of the site.
    pub fn points(&self) -> &[(f64, f64)] {
        &self.points
    }
}

/// How a member moves: a random walk in a box, or a patrol loop.
#[derive(Debug, Clone)]
pub enum Mover {
    /// See [`Walker`].
    Walk(Walker),
    /// See [`Patrol`].
    Patrol(Patrol),
}

impl Mover {
    /// Moves on for `dt_s` seconds.
    pub fn step(&mut self, dt_s: f64, rng: &mut impl Rng) {
        match self {
            Mover::Walk(w) => w.step(dt_s, rng),
            Mover::Patrol(p) => p.step(dt_s),
        }
    }

    /// Where the member is, 1e-7 degrees.
    pub fn position_e7(&self) -> (i32, i32) {
        match self {
            Mover::Walk(w) => w.position_e7(),
            Mover::Patrol(p) => p.position_e7(),
        }
    }
}

fn distance(a: (f64, f64), b: (f64, f64)) -> f64 {
    (b.0 - a.0).hypot(b.1 - a.1)
}

/// `x` folded into `-r..=r` as if bouncing between walls at `-r` and `r`.
fn reflect(x: f64, r: f64) -> f64 {
    let period = 4.0 * r;
    let mut y = (x + r).rem_euclid(period);
    if y > 2.0 * r {
        y = period - y;
    }
    y - r
}

/// A random place within `radius_m` (east and north) of `site`.
pub fn near(site: (i32, i32), radius_m: f64, rng: &mut impl Rng) -> (i32, i32) {
    let r = radius_m.max(1.0);
    offset_e7(site, rng.gen_range(-r..=r), rng.gen_range(-r..=r))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn walkers_stay_within_their_box_and_move() {
        let mut rng = StdRng::seed_from_u64(7);
        let site = unit_site(10, 1234);
        for _ in 0..50 {
            let mut w = Walker::new(site, 300.0, 3.0, &mut rng);
            let start = (w.east, w.north);
            let mut moved = 0.0f64;
            for _ in 0..2000 {
                // Steps up to 10 minutes long: far past the walls.
                let dt = if rng.gen_bool(0.01) { 600.0 } else { 2.0 };
                w.step(dt, &mut rng);
                assert!(w.east.abs() <= 300.0 + 1e-9, "east {}", w.east);
                assert!(w.north.abs() <= 300.0 + 1e-9, "north {}", w.north);
                moved = moved.max((w.east - start.0).hypot(w.north - start.1));
            }
            assert!(moved > 10.0, "a walker never left its start");
        }
    }

    #[test]
    fn positions_are_metres_from_the_site() {
        let site = CITY_CENTRE_E7;
        let (lat, lon) = offset_e7(site, 1000.0, 1000.0);
        // 1 km north is about 0.009 degrees; east a little more at 29 N.
        assert!((f64::from(lat - site.0) * 1e-7 - 0.008993).abs() < 1e-5);
        assert!((f64::from(lon - site.1) * 1e-7 - 0.010286).abs() < 1e-4);
        assert_eq!(reflect(350.0, 300.0), 250.0);
        assert_eq!(reflect(-350.0, 300.0), -250.0);
        assert_eq!(reflect(1300.0, 300.0), 100.0);
        assert_eq!(reflect(120.0, 300.0), 120.0);
    }

    #[test]
    fn sites_are_stable_and_near_their_station() {
        assert_eq!(unit_site(5, 77), unit_site(5, 77));
        let (s, u) = (station_site(5), unit_site(5, 77));
        let dlat_m = f64::from(u.0 - s.0) * 1e-7 * M_PER_DEG;
        assert!(dlat_m.abs() <= 1500.0 + 1.0);
        let c = CITY_CENTRE_E7;
        assert!((f64::from(s.0 - c.0) * 1e-7 * M_PER_DEG).abs() <= 10_000.0 + 1.0);
    }

    #[test]
    fn patrols_loop_within_their_radius_and_are_deterministic() {
        let site = unit_site(10, 1234);
        for seed in 0..50 {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut p = Patrol::new(site, 250.0, 1.5, &mut rng);
            assert!((4..=7).contains(&p.points().len()));
            for (e, n) in p.points() {
                let d = e.hypot(*n);
                assert!(
                    (100.0 - 1e-9..=250.0 + 1e-9).contains(&d),
                    "waypoint {d} m out"
                );
            }
            let again = Patrol::new(site, 250.0, 1.5, &mut StdRng::seed_from_u64(seed));
            assert_eq!(
                p.position_e7(),
                again.position_e7(),
                "same seed, same patrol"
            );
            // Walk two whole loops in 10 s steps: never off the loop's
            // box, never a jump longer than one step, and back where it
            // started after exactly one loop.
            let mut last = p.offset_m();
            let lap_s = p.length_m / p.speed_mps;
            let steps = (2.0 * lap_s / 10.0).ceil() as usize;
            for _ in 0..steps {
                p.step(10.0);
                let now = p.offset_m();
                assert!(now.0.hypot(now.1) <= 250.0 + 1e-6);
                assert!(distance(last, now) <= p.speed_mps * 10.0 + 1e-6);
                last = now;
            }
            let mut q = again.clone();
            q.step(lap_s);
            let back = q.offset_m();
            let first = again.offset_m();
            assert!(distance(back, first) < 1e-6, "{back:?} vs {first:?}");
            assert!(p.speed_mps >= 0.75 && p.speed_mps <= 1.5);
        }
        // Standing still is allowed.
        let mut still = Patrol::new(site, 100.0, 0.0, &mut StdRng::seed_from_u64(1));
        let at = still.position_e7();
        still.step(600.0);
        assert_eq!(still.position_e7(), at);
    }
}
