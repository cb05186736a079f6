# libFuzzer targets (tests/fuzz/), built only with -DMPL_FUZZ=ON and clang
# (scripts/fuzz.sh): every library is instrumented (the root CMakeLists adds
# -fsanitize=fuzzer-no-link,address,undefined), the targets link libFuzzer.
# They link only what they read with (io, dist, core; the config parser
# from launch/ as a source), so a fuzz build compiles no attention code.
if(MPL_FUZZ)
  add_executable(fuzz_config ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/fuzz_config.c
                             ${CMAKE_SOURCE_DIR}/launch/config.c)
  target_link_libraries(fuzz_config PRIVATE mpl_io PkgConfig::INIH)
  add_executable(fuzz_h5 ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/fuzz_h5.c)
  target_link_libraries(fuzz_h5 PRIVATE mpl_io)
  foreach(t fuzz_config fuzz_h5)
    target_link_options(${t} PRIVATE -fsanitize=fuzzer)
  endforeach()
endif()
