//! The replay window of RFC 3711 §3.3.2: a sliding bitmap of the most
//! recently accepted packet indices.

use super::Error;

/// Packets the window remembers behind the highest accepted index. RFC 3711
/// §3.3.2 asks for at least 64; 128 covers 2.56 s of 20 ms voice frames, far
/// more reordering than a radio network delivers, in one `u128`.
pub const WINDOW: u64 = 128;

/// Which of the last [`WINDOW`] indices have been accepted.
///
/// [`check`](Window::check) before decrypting, [`accept`](Window::accept)
/// only once the packet authenticated: a forged packet must not move the
/// window.
#[derive(Debug, Clone, Default)]
pub struct Window {
    /// Highest index accepted, if any yet.
    highest: Option<u64>,
    /// Bit `n` set: index `highest - n` was accepted.
    seen: u128,
}

impl Window {
    /// Whether `index` may still be accepted: newer than the highest, or
    /// within the window and not seen yet.
    pub fn check(&self, index: u64) -> Result<(), Error> {
        let Some(highest) = self.highest else {
            return Ok(());
        };
        if index > highest {
            return Ok(());
        }
        let behind = highest - index;
        if behind >= WINDOW {
            return Err(Error::TooOld);
        }
        if self.seen & (1u128 << behind) != 0 {
            return Err(Error::Replayed);
        }
        Ok(())
    }

    /// Records `index` as accepted. Call it only after [`check`](Window::check)
    /// passed and the packet authenticated.
    pub fn accept(&mut self, index: u64) {
        match self.highest {
            Some(highest) if index <= highest => {
                let behind = highest - index;
                if behind < WINDOW {
                    self.seen |= 1u128 << behind;
                }
            }
            Some(highest) => {
                let ahead = index - highest;
                self.seen = if ahead >= WINDOW {
                    0
                } else {
                    self.seen << ahead
                };
                self.seen |= 1;
                self.highest = Some(index);
            }
            None => {
                self.seen = 1;
                self.highest = Some(index);
            }
        }
    }

    /// The highest index accepted so far.
    pub fn highest(&self) -> Option<u64> {
        self.highest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(window: &mut Window, index: u64) -> Result<(), Error> {
        window.check(index)?;
        window.accept(index);
        Ok(())
    }

    #[test]
    fn each_index_once_in_any_order_within_the_window() {
        let mut window = Window::default();
        let order = [10u64, 12, 11, 15, 13, 14, 9];
        for index in order {
            assert_eq!(take(&mut window, index), Ok(()), "first {index}");
        }
        for index in order {
            assert_eq!(
                take(&mut window, index),
                Err(Error::Replayed),
                "again {index}"
            );
        }
        assert_eq!(window.highest(), Some(15));
    }

    #[test]
    fn the_window_edge_is_exact() {
        let mut window = Window::default();
        take(&mut window, 1000).expect("first");
        // 1000 - 127 is the oldest index still inside.
        assert_eq!(window.check(1000 - (WINDOW - 1)), Ok(()));
        assert_eq!(window.check(1000 - WINDOW), Err(Error::TooOld));
        take(&mut window, 1000 - (WINDOW - 1)).expect("oldest inside");
        assert_eq!(window.check(1000 - (WINDOW - 1)), Err(Error::Replayed));
    }

    #[test]
    fn a_big_jump_forgets_everything_behind() {
        let mut window = Window::default();
        take(&mut window, 5).expect("first");
        take(&mut window, 5 + 10 * WINDOW).expect("jump");
        assert_eq!(window.check(5), Err(Error::TooOld));
        assert_eq!(window.check(5 + 10 * WINDOW - 1), Ok(()));
        // A jump of exactly the window size keeps nothing but the new index.
        let mut window = Window::default();
        take(&mut window, 0).expect("first");
        take(&mut window, WINDOW).expect("jump by the window");
        assert_eq!(window.check(0), Err(Error::TooOld));
        assert_eq!(window.check(1), Ok(()));
    }

    #[test]
    fn a_checked_but_unaccepted_index_stays_acceptable() {
        // What a forged packet does: passes check, fails authentication, is
        // never accepted; the genuine packet with that index still gets in.
        let mut window = Window::default();
        take(&mut window, 50).expect("first");
        assert_eq!(window.check(60), Ok(()));
        assert_eq!(window.check(60), Ok(()));
        take(&mut window, 60).expect("genuine");
    }
}
