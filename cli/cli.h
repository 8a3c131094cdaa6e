/* Shared pieces of the afo command-line tool. Each subcommand is a function
 * cmd_NAME(argc, argv) (argv[0] is the subcommand) listed in afo.c. */
#ifndef AFO_CLI_H
#define AFO_CLI_H

#include <afo/afo.h>

/* Prints "afo: WHAT: <last error>" and returns 1. */
int cli_fail(const char *what);
double cli_now(void);

/* Option parsing shared by subcommands: returns the value after argv[*i]
 * (advancing *i) or NULL with a message when it is missing. */
const char *cli_value(int argc, char **argv, int *i);
/* Parses an integer option in [lo, hi]; prints the error and returns -1. */
int cli_int(const char *opt, const char *text, long lo, long hi, long *out);

int cmd_selfcheck(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_detokenize(int argc, char **argv);
int cmd_random_model(int argc, char **argv);
int cmd_logits(int argc, char **argv);
int cmd_template(int argc, char **argv);

#endif
