#include <math.h>
/* Gaussian mixture (diagonal covariances) log-likelihood of N points in d
 * dimensions under K components. theta = [alpha (K), mu (K*d), log_sigma (K*d)],
 * weights = softmax(alpha). */
double gmm_loglik(const double *theta, const double *x, long n, long d, long k) {
    const double *alpha = theta, *mu = theta + k, *ls = theta + k + k * d;
    double amax = alpha[0], asum = 0.0;
    for (long j = 1; j < k; j++) amax = fmax(amax, alpha[j]);
    for (long j = 0; j < k; j++) asum += exp(alpha[j] - amax);
    double log_norm = amax + log(asum) + 0.5 * d * log(2.0 * M_PI);
    double total = 0.0;
    for (long i = 0; i < n; i++) {
        double best = -INFINITY, acc = 0.0;
        double terms[64];
        for (long j = 0; j < k; j++) {
            double t = alpha[j];
            for (long c = 0; c < d; c++) {
                double z = (x[i * d + c] - mu[j * d + c]) * exp(-ls[j * d + c]);
                t -= 0.5 * z * z + ls[j * d + c];
            }
            terms[j] = t;
            best = fmax(best, t);  /* `if (t > best) best = t;` makes Enzyme v0.0.289 abort */
        }
        for (long j = 0; j < k; j++) acc += exp(terms[j] - best);
        total += best + log(acc) - log_norm;
    }
    return total;
}
