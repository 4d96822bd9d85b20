/* /echo: the request JSON back as the body. */
#include "_guests/echo.h"

int main(void) { return echo_request(); }
