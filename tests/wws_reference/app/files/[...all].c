/* /files/<anything/below>: a catch-all route, the rest of the path in params.all. */
#include "../_guests/echo.h"

int main(void) { return echo_request(); }
