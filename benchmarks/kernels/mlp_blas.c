#include <cblas.h>
#include <math.h>
#include <stdlib.h>
/* The 2-layer tanh MLP of mlp.c written with CBLAS: Z = X W1 + b1 (dgemm),
 * out = tanh(Z) w2 + b2 (dgemv), mean squared error over the batch. Same
 * theta layout: [W1 (in*hidden, row-major by input), b1, w2, b2]. */
double mlp_blas_loss(const double *theta, const double *x, const double *y,
                     long batch, long in, long hidden) {
    const double *w1 = theta, *b1 = theta + in * hidden, *w2 = b1 + hidden, *b2 = w2 + hidden;
    double *z = (double *)malloc(batch * hidden * sizeof(double));
    double *out = (double *)malloc(batch * sizeof(double));
    for (long s = 0; s < batch; s++)
        for (long h = 0; h < hidden; h++) z[s * hidden + h] = b1[h];
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)batch, (int)hidden, (int)in, 1.0,
                x, (int)in, w1, (int)hidden, 1.0, z, (int)hidden);
    for (long i = 0; i < batch * hidden; i++) z[i] = tanh(z[i]);
    for (long s = 0; s < batch; s++) out[s] = b2[0];
    cblas_dgemv(CblasRowMajor, CblasNoTrans, (int)batch, (int)hidden, 1.0, z, (int)hidden, w2, 1, 1.0, out, 1);
    double loss = 0.0;
    for (long s = 0; s < batch; s++) {
        double e = out[s] - y[s];
        loss += e * e;
    }
    free(z);
    free(out);
    return loss / batch;
}
