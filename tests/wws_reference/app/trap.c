/* /trap: the guest traps before answering (wws answers 500 and keeps serving). */
int main(void) { __builtin_trap(); }
