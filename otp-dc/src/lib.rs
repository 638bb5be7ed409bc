//! otp-dc: placeholder, filled by its own work.
