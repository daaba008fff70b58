//! The population stability index: how far a distribution seen in production has moved from the
//! one seen in training, over the same bins.
//!
//! `PSI = Σ (a_i − e_i) · ln(a_i / e_i)` over bins, `a_i` the share of production values in bin
//! `i`, `e_i` the training share. A bin empty on either side would make the sum infinite, so
//! both shares are floored at [`FLOOR`] first (a common convention; the floor bounds one empty
//! bin's contribution at about 0.1 for a 10% training share). Readings usually taken: below 0.1
//! stable, 0.1 to 0.25 a moderate shift, above 0.25 a large one.

/// The smallest share a bin is given on either side.
pub const FLOOR: f64 = 1e-4;

/// The PSI of `counts` (production values per bin) against `expected` (training shares per
/// bin, same length). `None` when no value was counted.
pub fn psi(expected: &[f64], counts: &[u32]) -> Option<f64> {
    debug_assert_eq!(expected.len(), counts.len());
    let total: u64 = counts.iter().map(|&c| u64::from(c)).sum();
    if total == 0 {
        return None;
    }
    let total = total as f64;
    let sum = expected
        .iter()
        .zip(counts)
        .map(|(&e, &c)| {
            let a = (f64::from(c) / total).max(FLOOR);
            let e = e.max(FLOOR);
            (a - e) * (a / e).ln()
        })
        .sum();
    Some(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_distribution_has_no_shift() {
        let psi = psi(&[0.25, 0.25, 0.5], &[25, 25, 50]).unwrap();
        assert!(psi.abs() < 1e-12, "{psi}");
    }

    #[test]
    fn a_moved_distribution_has_the_textbook_value() {
        // Shares 0.5/0.5 against 0.9/0.1: (0.4 ln 1.8) + (-0.4 ln 0.2).
        let want = 0.4 * (1.8f64).ln() + (-0.4) * (0.2f64).ln();
        let got = psi(&[0.5, 0.5], &[90, 10]).unwrap();
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        assert!(got > 0.25);
    }

    #[test]
    fn an_empty_bin_is_floored_not_infinite() {
        let got = psi(&[0.5, 0.5], &[100, 0]).unwrap();
        assert!(got.is_finite() && got > 1.0, "{got}");
        assert_eq!(psi(&[0.5, 0.5], &[0, 0]), None);
    }
}
