/* Lotka-Volterra, explicit Euler: squared distance of the final state to a
 * target after nsteps steps; parameters p = {alpha, beta, delta, gamma}. */
double lv_loss(const double *p, long nsteps, double dt) {
    double x = 10.0, y = 5.0;
    for (long i = 0; i < nsteps; i++) {
        double dx = p[0] * x - p[1] * x * y;
        double dy = p[2] * x * y - p[3] * y;
        x += dt * dx;
        y += dt * dy;
    }
    return (x - 8.0) * (x - 8.0) + (y - 6.0) * (y - 6.0);
}
