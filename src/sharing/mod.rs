//! Sharing one box fairly: the GPU queue's order (fair share) and GPU bookings.

pub mod fair_share;
pub mod reservations;
