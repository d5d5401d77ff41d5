//! Sans-I/O pieces of the SMTP client: the reply parser, EHLO capabilities, dot-stuffing.
