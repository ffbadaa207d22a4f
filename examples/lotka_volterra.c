/*
 * Lotka-Volterra predator-prey model, integrated with explicit Euler.
 * Written the way legacy simulation codes are: flat arrays, an integer step
 * count, a loss that re-runs the simulation and compares with observations.
 *
 *   dx/dt = alpha*x - beta*x*y        (prey)
 *   dy/dt = delta*x*y - gamma*y       (predators)
 *
 * params = {alpha, beta, delta, gamma}
 */

/* Write the state every `stride` steps into traj[2*k], traj[2*k+1],
 * k = 0 .. nsteps/stride. */
void lv_simulate(const double *params, double x0, double y0, double dt,
                 int nsteps, int stride, double *traj)
{
    double x = x0, y = y0;
    int k = 0, i;
    traj[0] = x;
    traj[1] = y;
    for (i = 1; i <= nsteps; i++) {
        double dx = params[0] * x - params[1] * x * y;
        double dy = params[2] * x * y - params[3] * y;
        x += dt * dx;
        y += dt * dy;
        if (i % stride == 0) {
            k++;
            traj[2 * k] = x;
            traj[2 * k + 1] = y;
        }
    }
}

/* Sum of squared differences between the simulated states and `nobs`
 * observations data[2*k], data[2*k+1] taken every `stride` steps
 * (k = 0 is the initial state). */
double lv_loss(const double *params, const double *data, int nobs, int stride,
               double x0, double y0, double dt)
{
    double x = x0, y = y0, loss = 0.0;
    int k, i;
    for (k = 1; k < nobs; k++) {
        for (i = 0; i < stride; i++) {
            double dx = params[0] * x - params[1] * x * y;
            double dy = params[2] * x * y - params[3] * y;
            x += dt * dx;
            y += dt * dy;
        }
        loss += (x - data[2 * k]) * (x - data[2 * k]) + (y - data[2 * k + 1]) * (y - data[2 * k + 1]);
    }
    return loss;
}
