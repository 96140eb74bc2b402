//! The statistics of an A/B comparison: a two-proportion z-test, the 95% confidence
//! interval of the difference, and the sample a significant result would need.

use serde::Serialize;

/// z for a two-sided 95% interval (the 97.5th percentile of the standard normal).
const Z_95: f64 = 1.959_963_984_540_054;
/// z of 80% power (the 80th percentile), for the sample size estimate.
const Z_POWER: f64 = 0.841_621_233_572_914_3;

/// One variant's trials and successes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Arm {
    /// Contacts that entered the variant.
    pub n: i64,
    /// Of them, those that converted.
    pub k: i64,
}

impl Arm {
    /// The conversion rate (0 with no contacts).
    pub fn rate(self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.k as f64 / self.n as f64
        }
    }
}

/// B against A.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Comparison {
    /// rate(B) - rate(A).
    pub difference: f64,
    /// The 95% confidence interval of the difference (unpooled standard error).
    pub ci_low: f64,
    /// Its upper end.
    pub ci_high: f64,
    /// z of the pooled two-proportion test.
    pub z: f64,
    /// Its two-sided p-value.
    pub p_value: f64,
    /// Contacts per variant that would detect this difference at 95% with 80% power;
    /// `None` when there is no difference to detect.
    pub needed_per_variant: Option<i64>,
}

/// The two-proportion z-test of `b` against `a`; `None` when either has no contacts or
/// nobody (or everybody) converted in both, where the test says nothing.
pub fn compare(a: Arm, b: Arm) -> Option<Comparison> {
    if a.n <= 0 || b.n <= 0 {
        return None;
    }
    let (p1, p2) = (a.rate(), b.rate());
    let (n1, n2) = (a.n as f64, b.n as f64);
    let pooled = (a.k + b.k) as f64 / (n1 + n2);
    let se0 = (pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2)).sqrt();
    if se0 == 0.0 {
        return None;
    }
    let difference = p2 - p1;
    let z = difference / se0;
    let se = (p1 * (1.0 - p1) / n1 + p2 * (1.0 - p2) / n2).sqrt();
    Some(Comparison {
        difference,
        ci_low: difference - Z_95 * se,
        ci_high: difference + Z_95 * se,
        z,
        p_value: erfc(z.abs() / std::f64::consts::SQRT_2),
        needed_per_variant: needed(p1, p2),
    })
}

/// Contacts per variant to detect rates `p1` and `p2` apart (two-sided 5%, power 80%).
fn needed(p1: f64, p2: f64) -> Option<i64> {
    let d = (p2 - p1).abs();
    if d == 0.0 {
        return None;
    }
    let mean = (p1 + p2) / 2.0;
    let a = Z_95 * (2.0 * mean * (1.0 - mean)).sqrt();
    let b = Z_POWER * (p1 * (1.0 - p1) + p2 * (1.0 - p2)).sqrt();
    Some(((a + b) * (a + b) / (d * d)).ceil() as i64)
}

/// The complementary error function, to about 1e-15 relative error: a continued fraction
/// for large arguments, the series of erf otherwise.
pub fn erfc(x: f64) -> f64 {
    if x < 0.0 {
        return 2.0 - erfc(-x);
    }
    if x < 2.0 {
        return 1.0 - erf_series(x);
    }
    // Lentz's method on erfc(x) = exp(-x^2)/sqrt(pi) * 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + ...)))).
    let tiny = 1e-300;
    let mut f = x;
    let mut c = x;
    let mut d = 0.0;
    for n in 1..500 {
        let a = n as f64 / 2.0;
        d = x + a * d;
        d = if d.abs() < tiny { tiny } else { d };
        c = x + a / c;
        c = if c.abs() < tiny { tiny } else { c };
        d = 1.0 / d;
        let delta = c * d;
        f *= delta;
        if (delta - 1.0).abs() < 1e-16 {
            break;
        }
    }
    (-x * x).exp() / (f * std::f64::consts::PI.sqrt())
}

/// erf(x) = 2/sqrt(pi) * sum (-1)^n x^(2n+1) / (n! (2n+1)), for |x| < 2.
fn erf_series(x: f64) -> f64 {
    let mut term = x;
    let mut sum = x;
    for n in 1..200 {
        term *= -x * x / n as f64;
        let add = term / (2 * n + 1) as f64;
        sum += add;
        if add.abs() < 1e-17 * sum.abs() {
            break;
        }
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erfc_matches_known_values() {
        // erfc(0) = 1, erfc(1), erfc(2.5), erfc(1.959964/sqrt 2) = 0.05.
        assert!((erfc(0.0) - 1.0).abs() < 1e-15);
        assert!((erfc(1.0) - 0.157_299_207_050_285_13).abs() < 1e-14);
        assert!((erfc(2.5) - 4.069_520_174_449_59e-4).abs() < 1e-16);
        assert!((erfc(Z_95 / std::f64::consts::SQRT_2) - 0.05).abs() < 1e-12);
        assert!((erfc(-1.0) - 1.842_700_792_949_715).abs() < 1e-14);
    }

    #[test]
    fn no_contacts_or_no_variance_is_no_comparison() {
        assert_eq!(compare(Arm { n: 0, k: 0 }, Arm { n: 10, k: 1 }), None);
        assert_eq!(compare(Arm { n: 10, k: 0 }, Arm { n: 10, k: 0 }), None);
    }
}
