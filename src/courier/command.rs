//! Running a delivery command (MDA, pipe alias): no shell, the message on stdin, a time limit,
//! exit 0 = delivered, 75 (EX_TEMPFAIL) = temporary, anything else = permanent.
