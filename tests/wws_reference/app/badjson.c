/* /badjson: stdout is not a response object. */
#include <stdio.h>

int main(void) {
    fputs("{\"data\": \"unterminated", stdout);
    return 0;
}
