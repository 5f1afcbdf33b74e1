//! The one bound on amounts, points and counts, and the checked arithmetic
//! that keeps every derived value (rewards, line totals, balances) inside it.
//!
//! Imprint's description types amounts as bare JSON integers with no
//! maximum. The emulator accepts and produces only values within
//! ±[`MAX_AMOUNT`] = 2^53 − 1: past it a JSON number is no longer exact in
//! JavaScript and other parsers that read numbers as doubles, so a partner
//! could not read the value back, and the sum of two values in range still
//! fits an `i64`. A value out of range, given or derived, is a 400 naming the
//! field it came from; nothing here panics or wraps.

/// The largest amount, points value or count the emulator accepts or derives
/// (and the negation is the smallest): 2^53 − 1, exact in every JSON parser.
pub const MAX_AMOUNT: i64 = (1 << 53) - 1;

/// `n`, if it is within ±[`MAX_AMOUNT`].
pub(crate) fn bounded(n: i64) -> Option<i64> {
    (-MAX_AMOUNT..=MAX_AMOUNT).contains(&n).then_some(n)
}

/// `a + b`, if it is within bounds.
pub(crate) fn add(a: i64, b: i64) -> Option<i64> {
    a.checked_add(b).and_then(bounded)
}

/// `a × b` (a rate times a quantity), if it is within bounds.
pub(crate) fn mul(a: i64, b: i64) -> Option<i64> {
    a.checked_mul(b).and_then(bounded)
}

/// The sum of `values`, if it and every partial sum are within bounds.
pub(crate) fn sum(values: impl IntoIterator<Item = i64>) -> Option<i64> {
    values.into_iter().try_fold(0, add)
}

/// `bps` basis points of `amount` (a reward), rounded toward zero, if it is
/// within bounds. Computed in `i128` so that a legal amount never fails only
/// because the intermediate product is large.
pub(crate) fn share(amount: i64, bps: i64) -> Option<i64> {
    let points = i128::from(amount) * i128::from(bps) / 10_000;
    i64::try_from(points).ok().and_then(bounded)
}

/// How a validation detail states the bound, after the field's name.
pub(crate) fn range_text() -> String {
    format!("must be between -{MAX_AMOUNT} and {MAX_AMOUNT}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_symmetric_and_exact_in_a_double() {
        assert_eq!(bounded(MAX_AMOUNT), Some(MAX_AMOUNT));
        assert_eq!(bounded(-MAX_AMOUNT), Some(-MAX_AMOUNT));
        assert_eq!(bounded(MAX_AMOUNT + 1), None);
        assert_eq!(bounded(i64::MIN), None);
        assert_eq!(MAX_AMOUNT as f64 as i64, MAX_AMOUNT);
    }

    #[test]
    fn arithmetic_past_the_bound_is_none() {
        assert_eq!(add(MAX_AMOUNT, 1), None);
        assert_eq!(add(i64::MAX, 1), None);
        assert_eq!(add(MAX_AMOUNT, -1), Some(MAX_AMOUNT - 1));
        assert_eq!(mul(MAX_AMOUNT, MAX_AMOUNT), None);
        assert_eq!(mul(MAX_AMOUNT, 2), None);
        assert_eq!(mul(1000, 3), Some(3000));
        assert_eq!(sum([MAX_AMOUNT, 1, -1]), None);
        assert_eq!(sum([1, 2, 3]), Some(6));
        assert_eq!(sum([]), Some(0));
    }

    #[test]
    fn a_share_is_exact_for_any_rate() {
        assert_eq!(share(4000, 500), Some(200));
        assert_eq!(share(MAX_AMOUNT, 500), Some(MAX_AMOUNT / 20));
        assert_eq!(share(MAX_AMOUNT, 10_000), Some(MAX_AMOUNT));
        assert_eq!(share(MAX_AMOUNT, 20_000), None);
        assert_eq!(share(i64::MAX, i64::MAX), None);
        assert_eq!(share(-4000, 500), Some(-200));
    }
}
