"""Independent check of an A/B comparison: the p-value of a 2x2 chi-square test without
continuity correction (equal to the pooled two-proportion z-test's two-sided p-value),
and the 95% interval of the difference from scipy's normal quantile.

usage: ab_test.py N1 K1 N2 K2   (control, variant); prints JSON.
"""
import json
import sys

from scipy.stats import chi2_contingency, norm

n1, k1, n2, k2 = (int(a) for a in sys.argv[1:5])
chi2, p_value, _, _ = chi2_contingency([[k1, n1 - k1], [k2, n2 - k2]], correction=False)
p1, p2 = k1 / n1, k2 / n2
se = (p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2) ** 0.5
q = norm.ppf(0.975)
print(json.dumps({
    "p_value": p_value,
    "difference": p2 - p1,
    "ci_low": (p2 - p1) - q * se,
    "ci_high": (p2 - p1) + q * se,
}))
