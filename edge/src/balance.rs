//! Choosing a router endpoint: power of two choices on open connections, among the endpoints not
//! tried yet for this connection and not marked failing (marked ones only when no other is left).

use rand::Rng;

/// Picks an index among the `loads` whose `tried` flag is false, preferring those whose `failing`
/// flag is false: two distinct random candidates, the less loaded wins (the first on a tie). `None`
/// when every endpoint was tried.
pub(crate) fn pick_endpoint(
    loads: &[usize],
    tried: &[bool],
    failing: &[bool],
    rng: &mut impl Rng,
) -> Option<usize> {
    let flag = |flags: &[bool], i: usize| flags.get(i).copied().unwrap_or(false);
    let untried = (0..loads.len()).filter(|&i| !flag(tried, i));
    let mut candidates: Vec<usize> = untried.clone().filter(|&i| !flag(failing, i)).collect();
    if candidates.is_empty() {
        candidates = untried.collect();
    }
    match candidates.len() {
        0 => None,
        1 => Some(candidates[0]),
        n => {
            let first = rng.random_range(0..n);
            let mut second = rng.random_range(0..n - 1);
            if second >= first {
                second += 1;
            }
            let (a, b) = (candidates[first], candidates[second]);
            Some(if loads[b] < loads[a] { b } else { a })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_picks_a_tried_endpoint_and_ends_when_all_were_tried() {
        let mut rng = rand::rng();
        let loads = [0, 0, 0];
        let mut tried = [false; 3];
        for _ in 0..3 {
            let i = pick_endpoint(&loads, &tried, &[], &mut rng).unwrap();
            assert!(!tried[i]);
            tried[i] = true;
        }
        assert_eq!(pick_endpoint(&loads, &tried, &[], &mut rng), None);
        assert_eq!(pick_endpoint(&[], &[], &[], &mut rng), None);
    }

    #[test]
    fn with_two_endpoints_the_less_loaded_always_wins() {
        let mut rng = rand::rng();
        for _ in 0..100 {
            assert_eq!(
                pick_endpoint(&[5, 1], &[false, false], &[], &mut rng),
                Some(1)
            );
        }
    }

    #[test]
    fn the_most_loaded_of_many_is_never_picked() {
        let mut rng = rand::rng();
        let loads = [3, 3, 100, 3];
        for _ in 0..200 {
            assert_ne!(pick_endpoint(&loads, &[false; 4], &[], &mut rng), Some(2));
        }
    }

    #[test]
    fn failing_endpoints_are_skipped_while_another_is_left() {
        let mut rng = rand::rng();
        let failing = [true, false, true];
        for _ in 0..100 {
            assert_eq!(
                pick_endpoint(&[0, 9, 0], &[false; 3], &failing, &mut rng),
                Some(1),
                "the only healthy endpoint, however loaded"
            );
        }
        let tried = [false, true, false];
        let i = pick_endpoint(&[0, 0, 0], &tried, &failing, &mut rng);
        assert!(
            matches!(i, Some(0 | 2)),
            "failing ones when nothing else is left"
        );
    }
}
