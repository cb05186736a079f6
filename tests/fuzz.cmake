# libFuzzer targets (tests/fuzz/), built only with -DMPL_FUZZ=ON and clang
# (scripts/fuzz.sh): every library is instrumented (the root CMakeLists adds
# -fsanitize=fuzzer-no-link,address,undefined), the targets link libFuzzer.
# fuzz_config links only what it reads with (io, dist, core and the config
# parser from launch/ as a source); fuzz_h5 also builds models to load
# checkpoints into, so it links launch/ and attention/.
if(MPL_FUZZ)
  add_executable(fuzz_config ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/fuzz_config.c
                             ${CMAKE_SOURCE_DIR}/launch/config.c)
  target_link_libraries(fuzz_config PRIVATE mpl_io PkgConfig::INIH)
  add_executable(fuzz_h5 ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/fuzz_h5.c)
  target_link_libraries(fuzz_h5 PRIVATE mpl_launch)
  foreach(t fuzz_config fuzz_h5)
    target_link_options(${t} PRIVATE -fsanitize=fuzzer)
  endforeach()
endif()
