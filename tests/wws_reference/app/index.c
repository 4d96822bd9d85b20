/* /: the index route, an echo too (its URL shows how `/` and `/?q` arrive). */
#include "_guests/echo.h"

int main(void) { return echo_request(); }
