#include <math.h>
/* Total Black-Scholes price of n European calls. */
double bs_total(const double *spot, const double *vol, const double *strike,
                const double *expiry, double rate, long n) {
    double total = 0.0;
    for (long i = 0; i < n; i++) {
        double sq = vol[i] * sqrt(expiry[i]);
        double d1 = (log(spot[i] / strike[i]) + (rate + 0.5 * vol[i] * vol[i]) * expiry[i]) / sq;
        double d2 = d1 - sq;
        double n1 = 0.5 * erfc(-d1 * M_SQRT1_2), n2 = 0.5 * erfc(-d2 * M_SQRT1_2);
        total += spot[i] * n1 - strike[i] * exp(-rate * expiry[i]) * n2;
    }
    return total;
}
