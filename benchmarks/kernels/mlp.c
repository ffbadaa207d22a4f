#include <math.h>
/* Two-layer tanh MLP, in -> hidden -> 1, mean squared error over a batch.
 * theta = [W1 (in*hidden, row-major by input), b1 (hidden), W2 (hidden), b2 (1)]. */
double mlp_loss(const double *theta, const double *x, const double *y,
                long batch, long in, long hidden) {
    const double *w1 = theta, *b1 = theta + in * hidden, *w2 = b1 + hidden, *b2 = w2 + hidden;
    double loss = 0.0;
    for (long s = 0; s < batch; s++) {
        double out = b2[0];
        for (long h = 0; h < hidden; h++) {
            double z = b1[h];
            for (long i = 0; i < in; i++) z += x[s * in + i] * w1[i * hidden + h];
            out += w2[h] * tanh(z);
        }
        double e = out - y[s];
        loss += e * e;
    }
    return loss / batch;
}
