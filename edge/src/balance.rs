//! Choosing a router endpoint: power of two choices on open connections, among the endpoints not
//! tried yet for this connection and not marked failing (marked ones only when no other is left).

use rand::Rng;

/// Picks an index below `len` whose `tried` is false, preferring those whose `failing` is false:
/// two distinct random candidates, the less loaded (by `load`) wins (the first on a tie). `None`
/// when every endpoint was tried. Reads the endpoints through the closures, so a pick allocates
/// nothing.
pub(crate) fn pick_endpoint(
    len: usize,
    load: impl Fn(usize) -> usize,
    tried: impl Fn(usize) -> bool,
    failing: impl Fn(usize) -> bool,
    rng: &mut impl Rng,
) -> Option<usize> {
    let untried = || (0..len).filter(|&i| !tried(i));
    let healthy = untried().filter(|&i| !failing(i)).count();
    // The healthy untried ones, or (none left) every untried one.
    let nth = |k: usize| {
        if healthy > 0 {
            untried().filter(|&i| !failing(i)).nth(k)
        } else {
            untried().nth(k)
        }
    };
    let n = if healthy > 0 {
        healthy
    } else {
        untried().count()
    };
    match n {
        0 => None,
        1 => nth(0),
        n => {
            let first = rng.random_range(0..n);
            let mut second = rng.random_range(0..n - 1);
            if second >= first {
                second += 1;
            }
            let (a, b) = (nth(first)?, nth(second)?);
            Some(if load(b) < load(a) { b } else { a })
        }
    }
}

/// The endpoints a connection already tried, without an allocation for the first 64 indexes.
#[derive(Debug, Default)]
pub(crate) struct Tried {
    low: u64,
    high: Vec<usize>,
}

impl Tried {
    /// Marks `i` tried.
    pub(crate) fn insert(&mut self, i: usize) {
        match u32::try_from(i).ok().and_then(|i| 1u64.checked_shl(i)) {
            Some(bit) => self.low |= bit,
            None => self.high.push(i),
        }
    }

    /// Whether `i` was tried.
    pub(crate) fn contains(&self, i: usize) -> bool {
        match u32::try_from(i).ok().and_then(|i| 1u64.checked_shl(i)) {
            Some(bit) => self.low & bit != 0,
            None => self.high.contains(&i),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag(flags: &[bool], i: usize) -> bool {
        flags.get(i).copied().unwrap_or(false)
    }

    /// [`pick_endpoint`] over slices (a missing flag is false).
    fn pick(
        loads: &[usize],
        tried: &[bool],
        failing: &[bool],
        rng: &mut impl Rng,
    ) -> Option<usize> {
        pick_endpoint(
            loads.len(),
            |i| loads[i],
            |i| flag(tried, i),
            |i| flag(failing, i),
            rng,
        )
    }

    #[test]
    fn tried_indexes_are_remembered_below_and_above_64() {
        let mut tried = Tried::default();
        for i in [0, 5, 63, 64, 1000] {
            assert!(!tried.contains(i));
            tried.insert(i);
            assert!(tried.contains(i));
        }
        assert!(!tried.contains(1) && !tried.contains(65));
    }

    #[test]
    fn never_picks_a_tried_endpoint_and_ends_when_all_were_tried() {
        let mut rng = rand::rng();
        let loads = [0, 0, 0];
        let mut tried = [false; 3];
        for _ in 0..3 {
            let i = pick(&loads, &tried, &[], &mut rng).unwrap();
            assert!(!tried[i]);
            tried[i] = true;
        }
        assert_eq!(pick(&loads, &tried, &[], &mut rng), None);
        assert_eq!(pick(&[], &[], &[], &mut rng), None);
    }

    #[test]
    fn with_two_endpoints_the_less_loaded_always_wins() {
        let mut rng = rand::rng();
        for _ in 0..100 {
            assert_eq!(pick(&[5, 1], &[false, false], &[], &mut rng), Some(1));
        }
    }

    #[test]
    fn the_most_loaded_of_many_is_never_picked() {
        let mut rng = rand::rng();
        let loads = [3, 3, 100, 3];
        for _ in 0..200 {
            assert_ne!(pick(&loads, &[false; 4], &[], &mut rng), Some(2));
        }
    }

    #[test]
    fn failing_endpoints_are_skipped_while_another_is_left() {
        let mut rng = rand::rng();
        let failing = [true, false, true];
        for _ in 0..100 {
            assert_eq!(
                pick(&[0, 9, 0], &[false; 3], &failing, &mut rng),
                Some(1),
                "the only healthy endpoint, however loaded"
            );
        }
        let tried = [false, true, false];
        let i = pick(&[0, 0, 0], &tried, &failing, &mut rng);
        assert!(
            matches!(i, Some(0 | 2)),
            "failing ones when nothing else is left"
        );
    }
}
