/* /items/<id>: a dynamic segment, delivered in params.id. */
#include "../_guests/echo.h"

int main(void) { return echo_request(); }
