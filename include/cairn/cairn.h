// Everything a program using cairn includes.
#pragma once

#include "cairn/codec.h"
#include "cairn/database.h"
#include "cairn/error.h"
#include "cairn/file_store.h"
#include "cairn/json.h"
#include "cairn/kv.h"
#include "cairn/oid.h"
#include "cairn/query.h"
#include "cairn/record.h"
#include "cairn/store.h"
#include "cairn/typed.h"
#include "cairn/url.h"
#include "cairn/value.h"
#include "cairn/version.h"
