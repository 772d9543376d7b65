/* kiln/kiln.h - umbrella header: include this one. */
#ifndef KILN_H
#define KILN_H
#include "kiln/core.h"
#include "kiln/autograd.h"
#include "kiln/ops.h"
#endif
