/* Lennard-Jones energy of n particles (epsilon = sigma = 1), all pairs, and
 * the hand-written analytic forces for comparison. pos is n x 3. */
double lj_energy(const double *pos, long n) {
    double e = 0.0;
    for (long i = 0; i < n; i++)
        for (long j = i + 1; j < n; j++) {
            double dx = pos[3 * i] - pos[3 * j], dy = pos[3 * i + 1] - pos[3 * j + 1],
                   dz = pos[3 * i + 2] - pos[3 * j + 2];
            double r2 = dx * dx + dy * dy + dz * dz, s6 = 1.0 / (r2 * r2 * r2);
            e += 4.0 * (s6 * s6 - s6);
        }
    return e;
}
void lj_forces(const double *pos, long n, double *force) {
    for (long i = 0; i < 3 * n; i++) force[i] = 0.0;
    for (long i = 0; i < n; i++)
        for (long j = i + 1; j < n; j++) {
            double dx = pos[3 * i] - pos[3 * j], dy = pos[3 * i + 1] - pos[3 * j + 1],
                   dz = pos[3 * i + 2] - pos[3 * j + 2];
            double r2 = dx * dx + dy * dy + dz * dz, s6 = 1.0 / (r2 * r2 * r2);
            double f = 24.0 * (2.0 * s6 * s6 - s6) / r2;
            force[3 * i] += f * dx; force[3 * i + 1] += f * dy; force[3 * i + 2] += f * dz;
            force[3 * j] -= f * dx; force[3 * j + 1] -= f * dy; force[3 * j + 2] -= f * dz;
        }
}
